# gatekit: `make demo` runs the pipeline end to end on real CIFAR-10; `make test` runs the tests.
# Both create .venv and install everything themselves. torch is the CPU build that lies on disk,
# installed first, so that pyproject's torch>=2.4 adds nothing and pip never pulls a CUDA build.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
SHARED_DATA := $(abspath ../shared/datasets)
export GATEKIT_DATA ?= $(if $(wildcard $(SHARED_DATA)/cifar10.npz),$(SHARED_DATA),)
DEMO_DIR ?= runs/demo

.PHONY: venv demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[export,test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	@test -n "$(GATEKIT_DATA)" || { echo "make demo needs real CIFAR-10: set GATEKIT_DATA to a directory with cifar10.npz"; exit 2; }
	$(PY) -m gatekit.demo --out $(DEMO_DIR)

test: venv
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) runs build *.egg-info
