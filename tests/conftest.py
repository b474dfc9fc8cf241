import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path | None:
    d = os.environ.get("GATEKIT_DATA")
    if d and (Path(d) / "cifar10.npz").is_file():
        return Path(d)
    return None


@pytest.fixture
def cifar_dir() -> Path:
    d = data_dir()
    if d is None:
        pytest.skip("real CIFAR-10 not found: set GATEKIT_DATA to a directory holding cifar10.npz")
    return d


@pytest.fixture(autouse=True)
def _few_threads():
    """Two torch threads once torch is imported; the fixture never imports it, so the deploy side's tests run
    without torch (test_layers.py checks that)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(2)
    yield


# ------------------------------------------------------------------------------------------------ aarch64

AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")  # Debian's aarch64 libraries (package libc6-arm64-cross)
AARCH64_PACKAGES = {"aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu", "qemu-aarch64": "qemu-user", "cmake": "cmake"}
AARCH64_CPU = "cortex-a72"  # the emulated core (Raspberry Pi 4's): plain NEON, what the portable path compiles to
CORTEX_A72_CPUINFO = """processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

"""


def aarch64_unavailable(reason: str):
    """Skips an aarch64 check with `reason`; fails it instead where GATEKIT_REQUIRE_AARCH64=1 (.ci/run sets it, having
    installed the tools: there the check must run)."""
    if os.environ.get("GATEKIT_REQUIRE_AARCH64") == "1":
        pytest.fail(f"GATEKIT_REQUIRE_AARCH64=1, but the aarch64 check cannot run: {reason}")
    pytest.skip(reason)


def _need_aarch64_tools() -> None:
    missing = [pkg for tool, pkg in AARCH64_PACKAGES.items() if not shutil.which(tool)]
    if missing or not AARCH64_SYSROOT.is_dir():
        aarch64_unavailable(
            "the aarch64 cross-build and its emulation need Debian's g++-aarch64-linux-gnu and "
            f"qemu-user (missing here: {', '.join(missing) or AARCH64_SYSROOT}; apt-get install "
            "g++-aarch64-linux-gnu qemu-user)"
        )


@pytest.fixture(scope="session")
def qemu_aarch64(tmp_path_factory):
    """run(exe, *args) runs an aarch64 program under qemu-user (a Cortex-A72) and returns its CompletedProcess.

    The guest's root (-L) is a directory holding lib/ (Debian's aarch64 libraries) and a proc/cpuinfo of Cortex-A72
    cores: qemu-user looks each absolute path up there first, and otherwise shows the guest the host's x86
    /proc/cpuinfo, on which the cpuinfo library inside onnxruntime's aarch64 build dereferences a null pointer while
    the runtime loads."""
    _need_aarch64_tools()
    root = tmp_path_factory.mktemp("aarch64-root")
    (root / "lib").symlink_to(AARCH64_SYSROOT / "lib")
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text("".join(CORTEX_A72_CPUINFO.format(i=i) for i in range(os.cpu_count() or 1)))

    def run(exe: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["qemu-aarch64", "-L", str(root), "-cpu", AARCH64_CPU, str(exe), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def aarch64_build(tmp_path_factory) -> Path:
    """native/ cross-built for aarch64 with native/cmake/aarch64-linux-gnu.cmake (Release, -j2): the ORT op library,
    the kernel self-check and the model runner gatekit_ort_run, in a build directory of this test session."""
    _need_aarch64_tools()
    build = tmp_path_factory.mktemp("aarch64-build")
    native = REPO / "native"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    steps = [
        [
            "cmake",
            "-S",
            str(native),
            "-B",
            str(build),
            *generator,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGATEKIT_OPS_OV=OFF",
            f"-DCMAKE_TOOLCHAIN_FILE={native / 'cmake' / 'aarch64-linux-gnu.cmake'}",
        ],
        [
            "cmake",
            "--build",
            str(build),
            "-j2",
            "--target",
            "gatekit_ort_ops",
            "gatekit_kernel_selfcheck",
            "gatekit_ort_run",
        ],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return build


@pytest.fixture(scope="session")
def aarch64_onnxruntime() -> Path:
    """libonnxruntime.so from onnxruntime's manylinux aarch64 wheel, of the version installed here (so that the x86
    reference runs the same release), fetched with pip once into ~/.cache/gatekit/aarch64 ($XDG_CACHE_HOME)."""
    ort = pytest.importorskip("onnxruntime")
    version = ort.__version__
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache_home / "gatekit" / "aarch64" / f"onnxruntime-{version}"
    lib = cache / f"libonnxruntime.so.{version}"
    if lib.is_file():
        return lib
    with tempfile.TemporaryDirectory() as d:
        py = f"{sys.version_info.major}{sys.version_info.minor}"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_28_aarch64",
                "--platform",
                "manylinux2014_aarch64",
                "--python-version",
                py,
                f"onnxruntime=={version}",
                "-d",
                d,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheels = sorted(Path(d).glob("onnxruntime-*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            aarch64_unavailable(f"cannot fetch onnxruntime {version}'s aarch64 wheel with pip: {last}")
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / f".{lib.name}.part"
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(f"onnxruntime/capi/{lib.name}") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(part, lib)
    return lib
