"""The Docker images and their install script, linted by structure (no hadolint here): pinned bases, a
non-root user, `gatekit` as entrypoint, the shared docker/install.sh, nothing fetched at run time; the
install script's flags; the Makefile's venv and docker targets."""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
INSTALL = DOCKER / "install.sh"
TARGETS = ("cpu", "cuda", "jetson")
FETCHERS = re.compile(r"\b(curl|wget|pip|pip3|apt-get|apt|git|conda)\b")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, f"{path}: dangling line continuation"
    return out


def resolve_from(path: Path) -> list[str]:
    """Every FROM's image, with ARG defaults substituted as Docker does for ARGs declared before it."""
    args, images = {}, []
    for keyword, rest in instructions(path):
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default.strip().strip('"')
        elif keyword == "FROM":
            image = rest.split()[0]
            for _ in range(3):  # defaults may refer to earlier ARGs
                image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), image)
            images.append(image)
    return images


def pinned(image: str) -> bool:
    if "@sha256:" in image:
        return bool(re.search(r"@sha256:[0-9a-f]{64}$", image))
    name, _, tag = image.rpartition("/")[2].partition(":")
    return bool(name) and bool(tag) and tag != "latest" and "$" not in image


@pytest.fixture(params=TARGETS)
def dockerfile(request) -> Path:
    return DOCKER / request.param / "Dockerfile"


def test_pinning_rule_itself():
    assert pinned("python:3.11-slim-bookworm") and pinned("nvcr.io/nvidia/tensorrt:24.08-py3")
    assert pinned("localhost:5000/gatekit:r36") and pinned("python@sha256:" + "a" * 64)
    assert not pinned("python") and not pinned("python:latest") and not pinned("localhost:5000/gatekit")
    assert not pinned("nvcr.io/nvidia/l4t-jetpack:") and not pinned("python@sha256:abc")


def test_every_from_is_pinned_by_tag_or_digest(dockerfile):
    images = resolve_from(dockerfile)
    assert images, f"{dockerfile}: no FROM"
    for image in images:
        assert pinned(image), f"{dockerfile}: FROM {image} is not pinned by a tag or digest (or is :latest)"


def test_bases_are_the_documented_ones():
    assert resolve_from(DOCKER / "cpu" / "Dockerfile") == ["python:3.11-slim-bookworm"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3", resolve_from(DOCKER / "cuda" / "Dockerfile")[0])
    assert re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+", resolve_from(DOCKER / "jetson" / "Dockerfile")[0])


def test_non_root_user_before_an_exec_form_gatekit_entrypoint(dockerfile):
    ins = instructions(dockerfile)
    kinds = [k for k, _ in ins]
    assert kinds.count("ENTRYPOINT") == 1, f"{dockerfile}: one ENTRYPOINT"
    entry = kinds.index("ENTRYPOINT")
    assert json.loads(ins[entry][1]) == ["gatekit"]
    users = [v for k, v in ins[:entry] if k == "USER"]
    assert users, f"{dockerfile}: no USER before ENTRYPOINT"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile}: USER {users[-1]} is root"
    assert all(k != "USER" or v.split(":")[0] not in ("root", "0") for k, v in ins[entry:])
    # the user exists: created in a RUN before USER
    assert any(k == "RUN" and re.search(rf"useradd\b.*\b{re.escape(users[-1])}\b", v) for k, v in ins[:entry])


def test_nothing_is_fetched_at_run_time(dockerfile):
    ins = instructions(dockerfile)
    for keyword, value in ins:
        if keyword in ("ENTRYPOINT", "CMD"):
            assert not FETCHERS.search(value), f"{dockerfile}: {keyword} {value} fetches at run time"
    env = " ".join(v for k, v in ins if k == "ENV")
    assert re.search(r"\bGATEKIT_OFFLINE=1\b", env), f"{dockerfile}: GATEKIT_OFFLINE=1 is not set"
    assert not any(k == "ADD" and re.search(r"https?://", v) for k, v in ins)


def test_each_image_installs_with_the_shared_script(dockerfile):
    ins = instructions(dockerfile)
    copied = " ".join(v for k, v in ins if k == "COPY")
    assert "docker/install.sh" in copied and "gatekit" in copied and "pyproject.toml" in copied
    runs = [v for k, v in ins if k == "RUN" and "docker/install.sh" in v]
    assert len(runs) == 1, f"{dockerfile}: docker/install.sh is not run exactly once"
    assert "--deploy" in runs[0] and "--runtimes" in runs[0]
    assert not re.search(r"pip3? install", " ".join(v for k, v in ins if k == "RUN")), "pip only through install.sh"
    # the build context sends what the COPYs need
    ignore = (dockerfile.parent / "Dockerfile.dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "gatekit/", "native/", "docker/install.sh"):
        assert f"!{needed}" in ignore, f"{dockerfile}.dockerignore leaves out {needed}"


def test_image_specific_runtimes():
    cpu = " ".join(v for k, v in instructions(DOCKER / "cpu" / "Dockerfile") if k == "RUN")
    assert "--runtimes ort,openvino" in cpu and "--system-site-packages" not in cpu
    cuda = " ".join(v for k, v in instructions(DOCKER / "cuda" / "Dockerfile") if k == "RUN")
    assert "--runtimes ort-gpu,tensorrt" in cuda and "--system-site-packages" in cuda
    jetson_text = (DOCKER / "jetson" / "Dockerfile").read_text()
    jetson = " ".join(v for k, v in instructions(DOCKER / "jetson" / "Dockerfile") if k == "RUN")
    assert "tensorrt" in jetson and "--system-site-packages" in jetson and "python3-libnvinfer" in jetson
    assert "L4T_TAG=r35" in jetson_text and "l4t-jetpack" in jetson_text  # JetPack 5 documented as an ARG
    # TensorRT is never pip-installed: install.sh's tensorrt runtime is cuda-python only
    assert not re.search(r"^\s*tensorrt\)\s*RUNTIME_PKGS\+=\(\"tensorrt", INSTALL.read_text(), flags=re.M)


def run_install(*args, env=None):
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env or os.environ.copy(),
    )


def dry_run_commands(*args) -> list[list[str]]:
    proc = run_install("--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    return [
        shlex.split(line) for line in proc.stdout.splitlines() if line.strip() and not line.startswith("install.sh:")
    ]


def test_install_script_parses_and_passes_shellcheck():
    assert subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True).returncode == 0
    assert INSTALL.read_text().startswith("#!/usr/bin/env bash") and "set -euo pipefail" in INSTALL.read_text()
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not on PATH (bash -n passed)")
    proc = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_install_help_and_bad_flag():
    proc = run_install("--help")
    assert proc.returncode == 0 and "Usage: bash docker/install.sh" in proc.stdout
    for flag in ("--venv", "--torch", "--extras", "--deploy", "--runtimes"):
        assert flag in proc.stdout
    for bad in (
        ["--no-such-flag"],
        ["--torch"],
        ["--torch", "latest"],
        ["--runtimes", "ort"],
        ["--deploy", "--runtimes", "cuda"],
    ):
        proc = run_install(*bad, "--dry-run")
        assert proc.returncode != 0, bad
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("install.sh: error: "), (bad, proc.stderr)
        assert proc.stdout == ""  # failed before doing anything


def test_default_install_is_the_makefiles_torch_first_then_editable_extras():
    cmds = dry_run_commands("--venv", "/tmp/gatekit-dry-venv")
    pip_installs = [c for c in cmds if c[1:4] == ["-m", "pip", "install"]]
    assert cmds[0][1:] == ["-m", "venv", "/tmp/gatekit-dry-venv"]
    assert [c[-1] for c in pip_installs] == ["pip", "torch==2.13.0", f"{REPO}[export,test]"]
    assert pip_installs[-1][-2] == "-e"
    assert any("nvidia-" in " ".join(c) for c in cmds)  # the CUDA-torch guard runs after torch
    index = dry_run_commands("--torch", "2.13.0", "--torch-index", "https://download.pytorch.org/whl/cpu")
    assert ["--index-url", "https://download.pytorch.org/whl/cpu"] == next(c for c in index if "torch==2.13.0" in c)[
        -3:-1
    ]


def test_existing_venv_is_reused():
    cmds = dry_run_commands("--venv", str(REPO / ".venv")) if (REPO / ".venv/bin/python").exists() else None
    if cmds is None:
        pytest.skip("no .venv here")
    assert not any(c[1:3] == ["-m", "venv"] for c in cmds)


def test_deploy_install_is_torch_free():
    cmds = dry_run_commands(
        "--venv", "/tmp/gatekit-dry-venv", "--deploy", "--runtimes", "ort,openvino", "--pip", "numpy<2"
    )
    text = [" ".join(c) for c in cmds]
    assert not any(re.search(r"\btorch[=<>]", t) for t in text)
    gatekit = next(c for c in cmds if any(str(REPO) in a for a in c))
    assert (
        f"{REPO}[ort,openvino]" in gatekit
        and "-e" not in gatekit
        and "--no-deps" not in gatekit
        and "numpy<2" in gatekit
    )
    assert any("find_spec('torch')" in t for t in text)  # the build fails if torch came in
    gpu = dry_run_commands(
        "--deploy", "--runtimes", "ort-gpu,tensorrt", "--system-site-packages", "--venv", "/tmp/gatekit-dry-venv"
    )
    assert gpu[0][-2:] == ["--system-site-packages", "/tmp/gatekit-dry-venv"]
    flat = " ".join(" ".join(c) for c in gpu)
    assert f"{REPO}[ort-gpu,tensorrt]" in flat and "tensorrt>=" not in flat


def test_deploy_extras_are_torch_free():
    """pyproject: the base install and every runtime extra leave out the training side (torch, safetensors, kornia),
    and the `train` extra brings it."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    training = ("torch", "safetensors", "kornia")
    for deps in [project["dependencies"], *(extras[k] for k in ("ort", "ort-gpu", "openvino", "tensorrt"))]:
        assert not any(d.lower().startswith(training) for d in deps), deps
    assert {d.split(">")[0] for d in extras["train"]} == set(training)
    assert "cuda-python>=12" in extras["tensorrt"] and not any(d.startswith("tensorrt") for d in extras["tensorrt"])


def _make(*args, env=None, **kw):
    """make in a clean environment: under `make test` the outer make's MAKEFLAGS/MAKELEVEL would make the
    inner one print 'Entering directory' lines."""
    env = {
        k: v for k, v in (env or os.environ).items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
    }
    return subprocess.run(
        [shutil.which("make") or "make", "--no-print-directory", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=30,
        **kw,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not on PATH")
def test_makefile_venv_recipe_calls_the_install_script():
    proc = _make("-n", "-B", ".venv/.installed")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert (
        lines[0].startswith("bash docker/install.sh ")
        and "--torch 2.13.0" in lines[0]
        and "--extras export,test" in lines[0]
    )
    assert lines[-1] == "touch .venv/.installed"
    for target, tag in (
        ("docker-cpu", "gatekit:cpu"),
        ("docker-cuda", "gatekit:cuda"),
        ("docker-jetson", "gatekit:jetson-r36"),
    ):
        proc = _make("-n", target)
        assert f"docker build -f docker/{target[7:]}/Dockerfile" in proc.stdout and f"-t {tag} ." in proc.stdout
    proc = _make("-n", "docker-jetson", "JETSON_L4T=r35.4.1")
    assert "--build-arg L4T_TAG=r35.4.1 -t gatekit:jetson-r35 ." in proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not on PATH")
def test_docker_targets_say_one_line_without_docker(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # an empty directory: no docker
    proc = _make("docker-cpu", env=env)
    assert proc.returncode != 0
    assert proc.stdout.strip() == "make docker-cpu needs docker on PATH"
