# gatekit: `make demo` runs the pipeline end to end on real CIFAR-10; `make test` runs the tests.
# Both create .venv and install everything themselves. torch is the CPU build that lies on disk,
# installed first, so that pyproject's torch>=2.4 adds nothing and pip never pulls a CUDA build.
# The venv is made by docker/install.sh, the same script the Docker images (docker/) run.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
SHARED_DATA := $(abspath ../shared/datasets)
export GATEKIT_DATA ?= $(if $(wildcard $(SHARED_DATA)/cifar10.npz),$(SHARED_DATA),)
DEMO_DIR ?= runs/demo
JETSON_L4T ?= r36.3.0
JETSON_TAG := jetson-$(firstword $(subst ., ,$(JETSON_L4T)))

.PHONY: venv demo test clean docker-cpu docker-cuda docker-jetson

$(VENV)/.installed: pyproject.toml docker/install.sh
	bash docker/install.sh --venv $(VENV) --python $(PYTHON) --torch $(TORCH_VERSION) --extras export,test --quiet
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m gatekit.demo --out $(DEMO_DIR)

test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) runs build *.egg-info

# Images (docker/README.md): built from the repository root; everything is downloaded at build time.
docker-cpu docker-cuda:
	@command -v docker >/dev/null 2>&1 || { echo "make $@ needs docker on PATH"; exit 2; }
	docker build -f docker/$(@:docker-%=%)/Dockerfile -t gatekit:$(@:docker-%=%) .

docker-jetson:
	@command -v docker >/dev/null 2>&1 || { echo "make $@ needs docker on PATH"; exit 2; }
	docker build -f docker/jetson/Dockerfile --build-arg L4T_TAG=$(JETSON_L4T) -t gatekit:$(JETSON_TAG) .
