#!/usr/bin/env bash
# Installs gatekit into a virtual environment. One script for the Makefile's venv (and so for CI, which
# runs `make test` from a fresh clone) and for the three Docker images (docker/{cpu,cuda,jetson}).
#
#   bash docker/install.sh                        # = make venv: .venv, torch==2.13.0 (CPU) first, then -e '.[export,test]'
#   bash docker/install.sh --venv /opt/gatekit --deploy --runtimes ort,openvino     # a torch-free deploy install
#
# Everything is downloaded here, at install (image build) time; nothing at run time.
set -euo pipefail
# (arrays expand as ${A[@]+"${A[@]}"}: empty ones are fine under set -u on bash 3.2 too)

usage() {
    cat <<'USAGE'
Usage: bash docker/install.sh [options]

Installs gatekit into a virtual environment (created if missing).

Options:
  --venv DIR              virtual environment to create or reuse (default: .venv)
  --python PY             interpreter that creates it, Python >= 3.10 (default: python3)
  --system-site-packages  let the venv see the system's packages (the image's own TensorRT bindings)
  --torch VERSION|none    install torch==VERSION first, before gatekit, so that pip never pulls a CUDA
                          build for pyproject's torch>=2.4 (default: 2.13.0, the CPU build on disk);
                          none: no torch (forced by --deploy)
  --torch-index URL       where torch comes from, e.g. https://download.pytorch.org/whl/cpu on a machine
                          whose index would give the CUDA build (default: pip's own configuration)
  --extras LIST           gatekit extras, comma-separated (default: export,test; ignored with --deploy)
  --deploy                torch-free deploy install: gatekit's base install (numpy, click, tqdm,
                          matplotlib; not editable) with one extra per --runtimes entry
  --runtimes LIST         with --deploy: comma list of ort, ort-gpu, openvino, tensorrt, installed as
                          gatekit[ort,...] (tensorrt: cuda-python, with the TensorRT bindings the base
                          image already has; tensorrt itself is never pip-installed here)
  --pip SPEC              one more requirement for the same pip call, e.g. 'numpy<2'; repeatable
  --src DIR               the gatekit source tree (default: the directory above this script)
  --no-native-ops         do not build gatekit's native ops into the op cache (a --deploy install's package
                          still carries the ONNX Runtime op library, compiled when its wheel is built)
  --ops-dir DIR           where the native op libraries go (default: $GATEKIT_OPS_DIR or ~/.cache/gatekit/ops)
  --quiet                 pass --quiet to pip
  --dry-run               print the commands instead of running them
  -h, --help              this help
USAGE
}

die() {
    echo "install.sh: error: $*" >&2
    exit 2
}

VENV=.venv
PYTHON=python3
SYSTEM_SITE=0
TORCH=2.13.0
TORCH_INDEX=""
EXTRAS=export,test
DEPLOY=0
RUNTIMES=""
PIP_SPECS=()
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUIET=()
DRY_RUN=0
NATIVE_OPS=1
OPS_DIR=""

need_value() {
    [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv) need_value "$@"; VENV="$2"; shift 2 ;;
        --python) need_value "$@"; PYTHON="$2"; shift 2 ;;
        --system-site-packages) SYSTEM_SITE=1; shift ;;
        --torch) need_value "$@"; TORCH="$2"; shift 2 ;;
        --torch-index) need_value "$@"; TORCH_INDEX="$2"; shift 2 ;;
        --extras) need_value "$@"; EXTRAS="$2"; shift 2 ;;
        --deploy) DEPLOY=1; shift ;;
        --runtimes) need_value "$@"; RUNTIMES="$2"; shift 2 ;;
        --pip) need_value "$@"; PIP_SPECS+=("$2"); shift 2 ;;
        --src) need_value "$@"; SRC="$2"; shift 2 ;;
        --quiet) QUIET=(--quiet); shift ;;
        --no-native-ops) NATIVE_OPS=0; shift ;;
        --ops-dir) need_value "$@"; OPS_DIR="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ -f "$SRC/pyproject.toml" ]] || die "no gatekit source at $SRC (pyproject.toml missing); pass --src DIR"
if [[ "$TORCH" != none && ! "$TORCH" =~ ^[0-9]+(\.[0-9]+)*([+a-z0-9.]*)?$ ]]; then
    die "--torch takes a version such as 2.13.0, or none; got '$TORCH'"
fi

# The deploy side: gatekit's base install (numpy, click, tqdm, matplotlib: no torch) plus one extra per runtime.
RUNTIME_EXTRAS=()
if [[ -n "$RUNTIMES" ]]; then
    [[ $DEPLOY == 1 ]] || die "--runtimes goes with --deploy (a full install takes them from --extras)"
    IFS=, read -r -a RUNTIME_NAMES <<< "$RUNTIMES"
    for name in ${RUNTIME_NAMES[@]+"${RUNTIME_NAMES[@]}"}; do
        case "$name" in
            "") ;;
            ort|ort-gpu|openvino) RUNTIME_EXTRAS+=("$name") ;;
            tensorrt) RUNTIME_EXTRAS+=(tensorrt) ;;  # cuda-python: TensorRT's own bindings come with the base image
            *) die "unknown runtime '$name' in --runtimes: choose from ort, ort-gpu, openvino, tensorrt" ;;
        esac
    done
    [[ ${#RUNTIME_EXTRAS[@]} -gt 0 ]] || die "--runtimes '$RUNTIMES' names no runtime"
fi

run() {
    if [[ $DRY_RUN == 1 ]]; then
        printf '%q ' "$@"
        echo
    else
        "$@"
    fi
}

command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter '$PYTHON' on PATH; pass --python PY"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    die "gatekit needs Python >= 3.10; $PYTHON is $("$PYTHON" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo unknown)"
fi

PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
    VENV_ARGS=()
    [[ $SYSTEM_SITE == 1 ]] && VENV_ARGS+=(--system-site-packages)
    run "$PYTHON" -m venv ${VENV_ARGS[@]+"${VENV_ARGS[@]}"} "$VENV"
fi
run "$PY" -m pip install ${QUIET[@]+"${QUIET[@]}"} --upgrade pip

if [[ $DEPLOY == 1 ]]; then
    # torch-free: the base install is the deploy side; each runtime comes as gatekit's extra of that name
    DEPLOY_SPEC="$SRC"
    if [[ ${#RUNTIME_EXTRAS[@]} -gt 0 ]]; then
        DEPLOY_SPEC="${SRC}[$(IFS=,; echo "${RUNTIME_EXTRAS[*]}")]"
    fi
    run "$PY" -m pip install ${QUIET[@]+"${QUIET[@]}"} "$DEPLOY_SPEC" ${PIP_SPECS[@]+"${PIP_SPECS[@]}"}
    # the checks: gatekit's CLI imports, torch is absent, and each runtime asked for loads
    run "$PY" -c "import gatekit.cli, importlib.util, sys; sys.exit('install.sh: error: torch is installed in a deploy install' if importlib.util.find_spec('torch') else 0)"
    if [[ -n "$RUNTIMES" ]]; then
        run "$PY" - "$RUNTIMES" <<'CHECK'
import sys
from gatekit.runtimes import BACKENDS
for name in sys.argv[1].split(","):
    key = {"ort-gpu": "ort"}.get(name, name)
    if name and not BACKENDS[key].available():
        sys.exit(f"install.sh: error: runtime {name} does not import after the install: {BACKENDS[key].install_hint}")
print("runtimes available:", ", ".join(k for k, b in BACKENDS.items() if b.available()))
CHECK
    fi
else
    if [[ "$TORCH" != none ]]; then
        # first, and pinned: pyproject's torch>=2.4 is then satisfied and pip adds nothing
        TORCH_ARGS=()
        [[ -n "$TORCH_INDEX" ]] && TORCH_ARGS+=(--index-url "$TORCH_INDEX")
        run "$PY" -m pip install ${QUIET[@]+"${QUIET[@]}"} ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"} "torch==$TORCH"
        # a CUDA build of torch drags nvidia-* wheels into the venv: refuse it rather than ship gigabytes
        run "$PY" -c "import importlib.metadata as m, sys, sysconfig; bad = sorted({d.metadata['Name'] for d in m.distributions(path=[sysconfig.get_paths()['purelib']]) if (d.metadata['Name'] or '').lower().startswith('nvidia-')}); sys.exit(f'install.sh: error: pip installed a CUDA build of torch ({bad[0]} came with it); rerun with --torch-index https://download.pytorch.org/whl/cpu' if bad else 0)"
    elif [[ $DRY_RUN == 0 ]] && ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then
        die "--torch none without --deploy needs torch already in $VENV: otherwise pip pulls one (maybe a CUDA build) for pyproject's torch>=2.4"
    fi
    SPEC="$SRC"
    [[ -n "$EXTRAS" ]] && SPEC="${SRC}[${EXTRAS}]"
    run "$PY" -m pip install ${QUIET[@]+"${QUIET[@]}"} -e "$SPEC" ${PIP_SPECS[@]+"${PIP_SPECS[@]}"}
fi

# gatekit's native ops (the fused GatedBlock of dynamic graphs; native/, C++17 + CMake), built against the
# runtimes just installed, into GATEKIT_OPS_DIR (--ops-dir) or ~/.cache/gatekit/ops. A --deploy install's package
# already carries the ONNX Runtime op library (its wheel build compiles it into gatekit/_ops/); this adds the
# OpenVINO extension, which is tied to the installed OpenVINO release. The editable install compiles nothing, so
# this builds both. Without a compiler the install still works: dynamic graphs then run their standard-ops
# fallback (`gatekit ops status` says why).
if [[ $NATIVE_OPS == 1 ]]; then
    OPS_ENV=(env "GATEKIT_NATIVE_SRC=$SRC/native")
    [[ -n "$OPS_DIR" ]] && OPS_ENV+=("GATEKIT_OPS_DIR=$OPS_DIR")
    if ! run "${OPS_ENV[@]}" "$PY" -m gatekit.native_ops build; then
        echo "install.sh: gatekit's native ops were not built (see above); dynamic graphs will run their standard-ops fallback"
    fi
fi

