"""Build and locate the native gated-block op libraries (ONNX Runtime custom ops, OpenVINO extension).

    python -m gatekit.native_ops build [--force] [--jobs N] [--json]
    python -m gatekit.native_ops status [--json]

The C++ sources live in the repository's ``native/`` folder (one CMake project).  ``build()`` runs CMake and
Ninja on them into a cache directory keyed by the installed runtime versions and the CPU:

    $GATEKIT_OPS_DIR (default ~/.cache/gatekit/ops) / ort-api17-ort1.32.0_ov2026.4.1_x86_64-avx512 /
        libgatekit_ort_ops.so   ONNX Runtime custom-op library (C API 17, works with onnxruntime >= 1.17)
        libgatekit_ov_ops.so    OpenVINO extension, tied to the exact OpenVINO release it was built against
        build.json              versions, ISA, compiler, paths, time, status per library and why one was not built
        build.log               CMake / compiler output

A library directory is any folder holding a build.json and the libraries it lists (the op cache above, or an
installed package's own folder).  build.json records, per library (``libraries.<runtime>``): its sha256 and size,
the runtime version it was built for and the ISA paths compiled into it; the record is written only once the
library file is complete.  Nothing is loaded before it is checked against that record:

``library_for("ort" | "openvino")`` returns the library matching the installed runtime (the installed package's
where it fits, else the op cache's), or None;
``find_library(runtime)`` returns it with the reason when there is none;
``check_library(runtime, path)`` refuses, with one line naming the file and the command that rebuilds it, a library
whose bytes differ from its record (damaged), one with no record, or one built for another runtime version;
``check_for_load(runtime, path)`` adds the check of ``GATEKIT_OPS_ISA`` against the paths the library holds and
this CPU runs (the backends call it before loading any op library).

An installed package (a wheel, or pip's build of the sdist or a checkout) carries the ONNX Runtime library in
``gatekit/_ops/`` with a build.json of the same schema (native/package.cmake writes it), and the C++ sources in
``gatekit/_native/``, from which ``build()`` works after install (the OpenVINO extension, tied to the installed
OpenVINO release, is built that way).

This module imports only the standard library (numpy, onnxruntime and openvino are never imported here).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gatekit.atomic import atomic_path, write_json
from gatekit.errors import GatekitError

DOMAIN = "gatekit"  # the ONNX domain (and OpenVINO opset) of gatekit's native ops (native/README.md)

OPS_VERSION = "0.1.0"
ORT_API_VERSION = 17  # native/ort/ort_abi.h: GATEKIT_ORT_API_VERSION
MIN_CMAKE = (3, 18)
RUNTIMES = ("ort", "openvino")
_SUFFIX = ".dylib" if sys.platform == "darwin" else ".so"
LIB_NAMES = {"ort": "libgatekit_ort_ops" + _SUFFIX, "openvino": "libgatekit_ov_ops" + _SUFFIX}
_RUNTIME_ALIASES = {"ort": "ort", "onnxruntime": "ort", "openvino": "openvino", "ov": "openvino"}
_ORT_DISTS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "onnxruntime-silicon",
    "ort-nightly",
    "ort-nightly-gpu",
)


REBUILD = "gatekit ops build"  # the command that (re)builds the libraries into the op cache
ISA_ENV = "GATEKIT_OPS_ISA"  # forces one kernel path (native/kernel/gated_block.cpp: isa_choice)
ISA_PATHS = ("avx512", "avx2", "portable")  # the kernel paths, best first
# The int8 ops' own path names (GATEKIT_OPS_ISA takes them too; the fp32 kernel reads them as avx512 / avx2)
INT8_ISA_PATHS = ("avx512vnni", "avxvnni")


class NativeOpsError(GatekitError, ValueError):
    """A native op library that cannot be used here (one line saying why).  `state` names the kind of refusal:
    "missing" (no file), "unrecorded" (no build record for it), "damaged" (its bytes differ from the record),
    "foreign" (built for another runtime version or machine), "isa" (GATEKIT_OPS_ISA names a path it cannot run)."""

    state = "unusable"

    def __init__(self, message: str, state: str | None = None):
        super().__init__(message)
        if state is not None:
            self.state = state


# ---------------------------------------------------------------------------------------------------------
# What is installed.


def source_dir() -> Path | None:
    """$GATEKIT_NATIVE_SRC, else the sources an installed package carries (gatekit/_native/), else the native/
    folder next to the package (a source checkout, an editable install), or None."""
    env = os.environ.get("GATEKIT_NATIVE_SRC")
    here = Path(__file__).resolve().parent
    for p in [Path(env)] if env else [here / "_native", here.parent / "native"]:
        if (p / "CMakeLists.txt").is_file():
            return p
    return None


def package_dir() -> Path:
    """gatekit/_ops/ of this install: the op libraries its wheel build put there, with their build.json
    (none in an editable install or a source checkout, whose libraries `gatekit ops build` puts in the cache)."""
    return Path(__file__).resolve().parent / "_ops"


def _dist_version(names) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def runtime_versions() -> dict:
    """Installed runtime versions (from package metadata; nothing is imported) and OpenVINO's cmake folder."""
    ort = _dist_version(_ORT_DISTS) if _find_spec("onnxruntime") is not None else None
    ov = None
    ov_cmake = None
    spec = _find_spec("openvino")
    if spec is not None and spec.submodule_search_locations:
        ov = _dist_version(("openvino", "openvino-nightly"))
        for loc in spec.submodule_search_locations:
            if (Path(loc) / "cmake" / "OpenVINOConfig.cmake").is_file():
                ov_cmake = str(Path(loc) / "cmake")
                break
    return {"onnxruntime": ort, "openvino": ov, "openvino_cmake_dir": ov_cmake}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_paths() -> list[str]:
    """The kernel paths this CPU can run, best first (the features native/kernel/gated_block.cpp's cpu_has asks)."""
    paths = []
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags = _cpu_flags()
        if {"avx512f", "avx512bw", "avx512vl", "fma"} <= flags:
            paths.append("avx512")
        if {"avx2", "fma"} <= flags:
            paths.append("avx2")
    return paths + ["portable"]


def int8_cpu_paths() -> list[str]:
    """The int8-only kernel paths this CPU can run (VNNI), best first."""
    flags = _cpu_flags() if platform.machine().lower() in ("x86_64", "amd64") else set()
    paths = []
    if "avx512" in cpu_paths() and "avx512_vnni" in flags:
        paths.append("avx512vnni")
    if "avx2" in cpu_paths() and "avx_vnni" in flags:
        paths.append("avxvnni")
    return paths


def cpu_isa() -> str:
    """The best kernel path this CPU can run: avx512, avx2 or portable."""
    return cpu_paths()[0]


def _machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m or "unknown")


def cache_root() -> Path:
    env = os.environ.get("GATEKIT_OPS_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gatekit" / "ops"


def build_key(versions: dict | None = None) -> str:
    v = versions or runtime_versions()
    return (
        f"ort-api{ORT_API_VERSION}-ort{v['onnxruntime'] or 'none'}_ov{v['openvino'] or 'none'}_{_machine()}-{cpu_isa()}"
    )


def build_dir(versions: dict | None = None) -> Path:
    """Where build() puts the libraries for the installed runtimes and this CPU."""
    return cache_root() / build_key(versions)


def source_hash(src: Path | None = None) -> str | None:
    src = src or source_dir()
    if src is None:
        return None
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.suffix in (".cpp", ".h", ".txt", ".map", ".cmake"):
            h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _tool_version(path: str, args=("--version",)) -> str | None:
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _find_program(name: str, module: str | None = None) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    if module and _find_spec(module) is not None:  # the cmake / ninja PyPI packages
        with contextlib.suppress(Exception):
            mod = __import__(module)
            for attr in ("CMAKE_BIN_DIR", "BIN_DIR"):
                d = getattr(mod, attr, None)
                if d and (Path(d) / name).is_file():
                    return str(Path(d) / name)
    return None


def find_tools() -> dict:
    """cmake, ninja (or make) and a C++ compiler, with versions."""
    cmake = _find_program("cmake", "cmake")
    ninja = _find_program("ninja", "ninja")
    make = shutil.which("make")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx and not os.path.isabs(cxx):
        cxx = shutil.which(cxx) or cxx
    cmake_version = None
    if cmake:
        first = _tool_version(cmake) or ""
        m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", first)
        cmake_version = m.group(0) if m else None
    return {
        "cmake": cmake,
        "cmake_version": cmake_version,
        "ninja": ninja,
        "ninja_version": _tool_version(ninja) if ninja else None,
        "make": make,
        "cxx": cxx,
        "cxx_version": _tool_version(cxx) if cxx else None,
    }


def _version_tuple(text: str | None, n: int = 3) -> tuple[int, ...]:
    nums = [int(x) for x in re.findall(r"\d+", text or "")[:n]]
    return tuple(nums + [0] * (n - len(nums)))


# ---------------------------------------------------------------------------------------------------------
# Build.


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _library_build_info(path: Path) -> dict | None:
    """gatekit_ops_build_info() of a built library, read in a child process (loading it cannot hurt us)."""
    code = (
        "import ctypes, sys; f = ctypes.CDLL(sys.argv[1]).gatekit_ops_build_info; "
        "f.restype = ctypes.c_char_p; sys.stdout.write(f().decode())"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


_SHA256: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read once per process for each (path, inode, size, modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _SHA256.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = _SHA256[key] = h.hexdigest()
    return digest


def library_record(
    runtime: str, path, versions: dict, build_info: dict | None = None, isa_compiled: list[str] | None = None
) -> dict:
    """The build.json entry (libraries.<runtime>) of a complete library file: its path, sha256 and size, the
    runtime version it was built for and the ISA paths compiled into it (from the library's own
    gatekit_ops_build_info where readable, else `isa_compiled`).  Whoever writes build.json (build(), a
    package's build) writes it only once the library file is complete: check_library trusts only the record."""
    rt = _runtime(runtime)
    path = Path(path)
    compiled = (build_info or {}).get("isa_compiled") or isa_compiled
    entry = {
        "status": "built",
        "path": str(path),
        "sha256": file_sha256(path),
        "size": path.stat().st_size,
        "isa_compiled": list(compiled) if compiled else None,
        "build_info": build_info,
    }
    if rt == "ort":
        entry.update(
            {
                "onnxruntime_version": versions["onnxruntime"],
                "ort_api_version": ORT_API_VERSION,
                "min_onnxruntime": f"1.{ORT_API_VERSION}",
            }
        )
    else:
        entry["openvino_version"] = versions["openvino"]
    return entry


def _tail(text: str, n: int = 12) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


@contextlib.contextmanager
def _locked(root: Path, key: str):
    root.mkdir(parents=True, exist_ok=True)
    lock_path = root / f".{key}.lock"
    with open(lock_path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _is_current(info: dict | None, versions: dict, src_hash: str | None, final: Path) -> bool:
    if not info or info.get("status") != "ok" or info.get("source_hash") != src_hash:
        return False
    if info.get("runtimes", {}).get("onnxruntime") != versions["onnxruntime"]:
        return False
    if info.get("runtimes", {}).get("openvino") != versions["openvino"]:
        return False
    for rt, lib in info.get("libraries", {}).items():
        if lib.get("status") == "built":
            try:  # a damaged or unrecorded library is rebuilt, not reported as up to date
                check_library(rt, final / Path(lib.get("path", "")).name, versions)
            except NativeOpsError:
                return False
    return True


def build(force: bool = False, jobs: int = 2, verbose: bool = False) -> dict:
    """Build the libraries for the installed runtimes into build_dir() (atomically) and return build.json.

    A current build (same sources, same runtime versions) is reused unless force=True.  Never raises for a
    missing tool or runtime: the returned dict says what was built and why anything was not
    (status "ok" or "failed"; libraries.<runtime>.status "built", "not built" or "failed", with a reason).
    """
    started = time.time()
    versions = runtime_versions()
    key = build_key(versions)
    root = cache_root()
    final = root / key
    src = source_dir()
    result: dict = {
        "gatekit_ops_version": OPS_VERSION,
        "status": "failed",
        "reason": None,
        "dir": str(final),
        "key": key,
        "source_dir": str(src) if src else None,
        "source_hash": None,
        "machine": _machine(),
        "cpu_isa": cpu_isa(),
        "runtimes": {"onnxruntime": versions["onnxruntime"], "openvino": versions["openvino"]},
        "ort_api_version": ORT_API_VERSION,
        "tools": {},
        "libraries": {},
        "created": None,
        "build_seconds": None,
        "cached": False,
    }
    if src is None:
        result["reason"] = (
            "native sources not found: this gatekit install has neither gatekit/_native/ nor native/ "
            "beside it (reinstall gatekit from its sdist or a checkout, or set GATEKIT_NATIVE_SRC)"
        )
        return result
    result["source_hash"] = src_hash = source_hash(src)

    existing = _read_json(final / "build.json")
    if not force and _is_current(existing, versions, src_hash, final):
        existing["cached"] = True
        return existing

    tools = find_tools()
    result["tools"] = tools
    if not tools["cmake"]:
        result["reason"] = "cmake not found (install it: apt-get install cmake ninja-build, or pip install cmake ninja)"
        return result
    if _version_tuple(tools["cmake_version"], 2) < MIN_CMAKE:
        result["reason"] = (
            f"cmake {tools['cmake_version']} is too old (need >= {MIN_CMAKE[0]}.{MIN_CMAKE[1]}; pip install cmake)"
        )
        return result
    if not tools["cxx"]:
        result["reason"] = "no C++ compiler found (install g++ or clang++, or set CXX)"
        return result
    if not tools["ninja"] and not tools["make"]:
        result["reason"] = "neither ninja nor make found (apt-get install ninja-build, or pip install ninja)"
        return result

    build_ov = versions["openvino"] is not None and versions["openvino_cmake_dir"] is not None
    with _locked(root, key):
        existing = _read_json(final / "build.json")  # another process may have finished meanwhile
        if not force and _is_current(existing, versions, src_hash, final):
            existing["cached"] = True
            return existing
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
        os.chmod(tmp, 0o755)
        try:
            result.update(_run_cmake(src, tmp, tools, versions, build_ov, jobs, verbose))
            result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            result["build_seconds"] = round(time.time() - started, 1)
            if result["status"] != "ok":
                if not final.exists():  # leave the reason where status() looks; never replace a good build
                    shutil.rmtree(tmp / "build", ignore_errors=True)
                    _write_build_json(tmp / "build.json", result)
                    os.replace(tmp, final)
                return result
            # Paths as they will be after the move.
            for lib in result["libraries"].values():
                if lib.get("status") == "built":
                    lib["path"] = str(final / Path(lib["path"]).name)
            shutil.rmtree(tmp / "build", ignore_errors=True)
            _write_build_json(tmp / "build.json", result)
            old = None
            if final.exists():
                old = root / f".old-{key}-{os.getpid()}-{int(time.time())}"
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return result
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _write_build_json(path: Path, info: dict) -> None:
    write_json(path, info)
    os.chmod(path, 0o644)


def _run_cmake(src: Path, tmp: Path, tools: dict, versions: dict, build_ov: bool, jobs: int, verbose: bool) -> dict:
    bdir = tmp / "build"
    log_path = tmp / "build.log"
    generator = "Ninja" if tools["ninja"] else "Unix Makefiles"
    cfg = [
        tools["cmake"],
        "-S",
        str(src),
        "-B",
        str(bdir),
        "-G",
        generator,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGATEKIT_OPS_ORT=ON",
        f"-DGATEKIT_OPS_OV={'ON' if build_ov else 'OFF'}",
        f"-DCMAKE_CXX_COMPILER={tools['cxx']}",
    ]
    if tools["ninja"]:
        cfg.append(f"-DCMAKE_MAKE_PROGRAM={tools['ninja']}")
    if build_ov:
        cfg += [f"-DOpenVINO_DIR={versions['openvino_cmake_dir']}", f"-DTBB_DIR={versions['openvino_cmake_dir']}"]
    bld = [tools["cmake"], "--build", str(bdir), "-j", str(max(1, int(jobs)))]
    out: dict = {
        "status": "failed",
        "reason": None,
        "generator": generator,
        "jobs": int(jobs),
        "log": str(log_path.name),
        "libraries": {},
    }
    log_chunks = []
    for cmd in (cfg, bld):
        log_chunks.append("$ " + " ".join(cmd) + "\n")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        text = (proc.stdout or "") + (proc.stderr or "")
        log_chunks.append(text)
        if verbose:
            sys.stderr.write(text)
        log_path.write_text("".join(log_chunks))
        if proc.returncode != 0:
            step = "configure" if cmd is cfg else "compile"
            out["reason"] = f"cmake {step} failed (see {log_path.name}):\n{_tail(text)}"
            break
    log = "".join(log_chunks)
    m = re.search(r"gatekit ops: ISA paths: (\S+)", log)
    out["isa_compiled"] = m.group(1).split(";") if m else None

    libs = out["libraries"]
    compiled = out["reason"] is None
    for rt in RUNTIMES:
        built = bdir / LIB_NAMES[rt]
        if rt == "openvino" and not build_ov:
            why = (
                "openvino is not installed (pip install openvino)"
                if versions["openvino"] is None
                else "the installed openvino package has no cmake/ folder (install the openvino wheel from PyPI)"
            )
            libs[rt] = {"status": "not built", "reason": why}
            continue
        if rt == "openvino" and "OpenVINO (Runtime + ONNX frontend) not found" in log:
            libs[rt] = {
                "status": "not built",
                "reason": f"CMake did not find OpenVINO in {versions['openvino_cmake_dir']} (see build.log)",
            }
            continue
        if not compiled or not built.is_file():
            libs[rt] = {"status": "failed", "reason": out["reason"] or "library missing after the build"}
            continue
        dest = tmp / LIB_NAMES[rt]
        with atomic_path(dest) as part:  # complete under its final name, or not there at all
            shutil.copy2(built, part)
        libs[rt] = library_record(rt, dest, versions, _library_build_info(dest), out["isa_compiled"])
    if compiled and all(lib["status"] != "failed" for lib in libs.values()):
        out["status"] = "ok"
    elif out["reason"] is None:
        out["reason"] = "; ".join(f"{rt}: {lib['reason']}" for rt, lib in libs.items() if lib["status"] == "failed")
    return out


# ---------------------------------------------------------------------------------------------------------
# Find and check.


def _runtime(name: str) -> str:
    try:
        return _RUNTIME_ALIASES[name.lower()]
    except (KeyError, AttributeError):
        raise NativeOpsError(f"unknown runtime {name!r}: use 'ort' or 'openvino'") from None


def _ov_release(version: str | None) -> tuple[int, ...]:
    return _version_tuple((version or "").split("-")[0], 3)


def _refuse(path: Path, why: str, state: str) -> NativeOpsError:
    return NativeOpsError(f"{path}: {why}: refused; rebuild it with `{REBUILD}`", state)


def check_library(runtime: str, path, versions: dict | None = None) -> dict:
    """The build.json entry of a library if it is the file its record describes and fits the installed runtime;
    else NativeOpsError (one line naming the file and the command that rebuilds it).

    The record is the build.json in the library's own folder (the op cache, or an installed package's folder):
    it must list the file as a built library of `runtime`, with the sha256 and size its bytes have now (hashed
    once per process per file version).  OpenVINO extensions must come from the same OpenVINO release
    (major.minor.patch); the ONNX Runtime library needs a runtime that serves its ORT API version
    (onnxruntime >= 1.17 for API 17).
    """
    rt = _runtime(runtime)
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise NativeOpsError(f"native {rt} op library not found: {path}; build it with `{REBUILD}`", "missing")
    info = _read_json(path.parent / "build.json")
    if not isinstance(info, dict):
        raise _refuse(path, "no readable build.json beside it", "unrecorded")
    lib = (info.get("libraries") or {}).get(rt)
    if not isinstance(lib, dict) or lib.get("status") != "built" or Path(str(lib.get("path", ""))).name != name:
        raise _refuse(path, f"build.json does not list it as a built {rt} library", "unrecorded")
    if info.get("machine") and info["machine"] != _machine():
        raise _refuse(path, f"built for {info['machine']}, this machine is {_machine()}", "foreign")
    want_sha, want_size = lib.get("sha256"), lib.get("size")
    if not isinstance(want_sha, str) or not isinstance(want_size, int):
        raise _refuse(path, "build.json records no sha256 and size for it", "unrecorded")
    size = path.stat().st_size
    if size != want_size:
        raise _refuse(path, f"damaged: {size} bytes where build.json records {want_size}", "damaged")
    digest = file_sha256(path)
    if digest != want_sha:
        raise _refuse(path, f"damaged: sha256 {digest[:16]}... where build.json records {want_sha[:16]}...", "damaged")
    v = versions or runtime_versions()
    if rt == "openvino":
        built = lib.get("openvino_version")
        if v["openvino"] is None:
            raise NativeOpsError(f"{path} was built for OpenVINO {built}, but openvino is not installed", "foreign")
        if _ov_release(built) != _ov_release(v["openvino"]):
            raise _refuse(path, f"built for OpenVINO {built} but OpenVINO {v['openvino']} is installed", "foreign")
    else:
        api = int(lib.get("ort_api_version") or ORT_API_VERSION)
        if v["onnxruntime"] is None:
            raise NativeOpsError(f"{path} needs onnxruntime >= 1.{api}, but onnxruntime is not installed", "foreign")
        major, minor, _ = _version_tuple(v["onnxruntime"], 3)
        if (major, minor) < (1, api):
            raise NativeOpsError(
                f"{path} needs ONNX Runtime API {api} (onnxruntime >= 1.{api}) "
                f"but onnxruntime {v['onnxruntime']} is installed",
                "foreign",
            )
    return lib


def check_isa(path, lib: dict) -> str:
    """The kernel path a library will run here: GATEKIT_OPS_ISA when set, else the best one this CPU runs.

    GATEKIT_OPS_ISA must name a path compiled into the library (its record's isa_compiled) that this CPU can run;
    anything else is NativeOpsError, one line naming the variable and the choices (the library itself would
    quietly run its default path)."""
    info = lib.get("build_info") or {}
    compiled = list(lib.get("isa_compiled") or info.get("isa_compiled") or ["portable"])
    compiled += [p for p in info.get("int8_isa_compiled") or [] if p in INT8_ISA_PATHS]
    choices = [p for p in cpu_paths() + int8_cpu_paths() if p in compiled]
    want = os.environ.get(ISA_ENV, "")
    if not want:
        return choices[0]
    if want in choices:
        return want
    if want in compiled:
        why = f"this CPU cannot run {want}"
    elif want in ISA_PATHS + INT8_ISA_PATHS:
        why = f"{Path(path).name} was built without {want}"
    else:
        why = "no such kernel path"
    raise NativeOpsError(
        f"{ISA_ENV}={want!r} is refused ({why}): set it to one of {', '.join(choices)} "
        f"(the paths in {Path(path).name} that this CPU runs) or unset it",
        "isa",
    )


def check_for_load(runtime: str, path, versions: dict | None = None) -> dict:
    """check_library, then check_isa: what must pass before a library is loaded into this process.  Returns
    the library's build.json entry with "isa": the kernel path it will run."""
    lib = check_library(runtime, path, versions)
    return dict(lib, isa=check_isa(path, lib))


def loaded_isa(path) -> str | None:
    """The kernel path that a library loaded in this process runs (its gatekit_ops_build_info's isa_selected),
    or None when it cannot say.  Only for a library that check_for_load passed: this loads it if it is not
    loaded yet (a library already loaded from `path` is the same one)."""
    import ctypes

    try:
        fn = ctypes.CDLL(str(path)).gatekit_ops_build_info
        fn.restype = ctypes.c_char_p
        return json.loads(fn().decode()).get("isa_selected")
    except (OSError, AttributeError, ValueError):
        return None


def find_library(runtime: str, versions: dict | None = None) -> tuple[Path | None, NativeOpsError | None]:
    """The usable library for the installed runtime (the installed package's where it fits, else the op
    cache's) and None, or None and why there is none (its .state says
    whether one is simply not built, "missing", or was refused)."""
    rt = _runtime(runtime)
    versions = versions or runtime_versions()
    packaged, _ = packaged_library(rt, versions)
    if packaged is not None:
        return packaged, None
    path = build_dir(versions) / LIB_NAMES[rt]
    try:
        check_library(rt, path, versions)
    except NativeOpsError as e:
        return None, e
    return path, None


_WARNED: set[str] = set()


def warn_refused(error: NativeOpsError, instead: str = "native-op graphs run their standard-ops fallback") -> None:
    """One line on stderr when a library that is there was refused, saying what happens `instead` (once per
    process and refusal; a library that is simply not built says nothing here)."""
    if error.state == "missing" or str(error) in _WARNED:
        return
    _WARNED.add(str(error))
    sys.stderr.write(f"gatekit: warning: {error}; {instead}\n")
    sys.stderr.flush()


def library_for(runtime: str) -> Path | None:
    """The library for the installed runtime ("ort" or "openvino"), or None if there is none usable: the one
    the installed package carries where it fits, else the op cache's build."""
    return find_library(runtime)[0]


# ---------------------------------------------------------------------------------------------------------
# The libraries an installed package carries (gatekit/_ops/, put there by its wheel build: native/package.cmake).


def write_package_record(
    ops_dir: Path,
    *,
    source: Path,
    machine: str,
    isa_compiled: list[str],
    compiler: str | None = None,
    cmake_version: str | None = None,
    openvino_version: str | None = None,
    reasons: dict | None = None,
    probe: bool = True,
) -> dict:
    """Writes ops_dir/build.json for the libraries a package build installed there (native/package_record.py
    runs this at the wheel's install step, once the libraries are complete) and returns it.

    The schema is the op cache's (build()): per library its path (the file name: the package's folder moves
    when it is installed), sha256 and size, the ISA paths compiled into it, and the runtime version it needs;
    `reasons` says why a library is absent. The ONNX Runtime library is built against the ORT C API header
    alone, so it records no onnxruntime version, only the API version it needs. `probe` reads each library's
    own build info in a child process (off for a cross build)."""
    ops_dir = Path(ops_dir)
    ops_dir.mkdir(parents=True, exist_ok=True)
    machine = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    libs: dict = {}
    for rt in RUNTIMES:
        path = ops_dir / LIB_NAMES[rt]
        if not path.is_file():
            libs[rt] = {"status": "not built", "reason": (reasons or {}).get(rt) or "not built by the package build"}
            continue
        info = _library_build_info(path) if probe else None
        entry = {
            "status": "built",
            "path": path.name,
            "sha256": file_sha256(path),
            "size": path.stat().st_size,
            "isa_compiled": (info or {}).get("isa_compiled") or list(isa_compiled),
            "build_info": info,
        }
        if rt == "ort":
            entry.update(
                {
                    "onnxruntime_version": None,
                    "ort_api_version": ORT_API_VERSION,
                    "min_onnxruntime": f"1.{ORT_API_VERSION}",
                }
            )
        else:
            entry["openvino_version"] = openvino_version
        libs[rt] = entry
    built = [rt for rt, lib in libs.items() if lib["status"] == "built"]
    record = {
        "gatekit_ops_version": OPS_VERSION,
        "status": "ok" if built else "failed",
        "reason": None if built else "; ".join(f"{rt}: {lib['reason']}" for rt, lib in libs.items()),
        "packaged": True,
        "dir": None,
        "key": "package",
        "source_dir": None,
        "source_hash": source_hash(source),
        "machine": machine,
        "cpu_isa": None,
        "runtimes": {"onnxruntime": None, "openvino": openvino_version},
        "ort_api_version": ORT_API_VERSION,
        "isa_compiled": list(isa_compiled) or None,
        "tools": {"cmake_version": cmake_version, "cxx_version": compiler},
        "libraries": libs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": None,
        "cached": False,
    }
    _write_build_json(ops_dir / "build.json", record)
    return record


def packaged_library(runtime: str, versions: dict | None = None) -> tuple[Path | None, str | None]:
    """The op library this install carries for `runtime` and None, or None and why it has none usable."""
    rt = _runtime(runtime)
    d = package_dir()
    info = _read_json(d / "build.json")
    if not isinstance(info, dict):
        return None, "this install carries no op libraries (a source checkout or an editable install)"
    lib = (info.get("libraries") or {}).get(rt)
    if not isinstance(lib, dict) or lib.get("status") != "built":
        return None, (lib or {}).get("reason") or info.get("reason") or "not in the package"
    path = d / LIB_NAMES[rt]
    try:
        check_library(rt, path, versions)
    except NativeOpsError as e:
        return None, str(e)
    return path, None


def kernel_info(path) -> dict | None:
    """What a library does on this CPU (its gatekit_ops_build_info, asked in a child process: the kernel path
    it selects here, isa_selected, honouring GATEKIT_OPS_ISA; the paths compiled into it), or None."""
    return _library_build_info(Path(path))


def fallback_note(runtime: str, artifact: str) -> str:
    """The line `gatekit bench` prints when a native-op graph ran its standard-ops fallback for want of a library."""
    rt = _runtime(runtime)
    return (
        f"gatekit: {artifact} ran its standard-ops fallback: gatekit's native op for {_LABEL[rt]} is missing here "
        f"(`gatekit ops status` says why); build it with `gatekit ops build`, then bench again"
    )


def _package_status(versions: dict) -> dict:
    d = package_dir()
    info = _read_json(d / "build.json")
    out = {"dir": str(d), "record": info if isinstance(info, dict) else None, "libraries": {}}
    for rt in RUNTIMES:
        path, why = packaged_library(rt, versions)
        out["libraries"][rt] = {"path": str(path or d / LIB_NAMES[rt]), "usable": path is not None, "reason": why}
    return out


def _in_use(st: dict) -> dict:
    """Per runtime, the library library_for() picks (the package's first, then the cache's) and where from."""
    out = {}
    for rt in RUNTIMES:
        for source, entry in (("package", st["package"]["libraries"][rt]), ("cache", st["libraries"][rt])):
            if entry["usable"]:
                out[rt] = {"path": entry["path"], "from": source}
                break
    return out


def status() -> dict:
    """What is installed, where the libraries are (or would be) and whether each can be used: each library's
    state is "ready", "not built", or why it is refused ("damaged", "unrecorded", "foreign", "isa")."""
    versions = runtime_versions()
    d = build_dir(versions)
    info = _read_json(d / "build.json")
    src = source_dir()
    out = {
        "source_dir": str(src) if src else None,
        "cache_root": str(cache_root()),
        "dir": str(d),
        "key": build_key(versions),
        "built": info is not None and info.get("status") == "ok",
        "stale": False,
        "cpu_isa": cpu_isa(),
        "cpu_paths": cpu_paths(),
        "machine": _machine(),
        "isa_requested": os.environ.get(ISA_ENV) or None,
        "runtimes": {"onnxruntime": versions["onnxruntime"], "openvino": versions["openvino"]},
        "build": info,
        "libraries": {},
    }
    if info and src is not None and info.get("source_hash") != source_hash(src):
        out["stale"] = True
    for rt in RUNTIMES:
        path = d / LIB_NAMES[rt]
        entry = {"path": str(path), "usable": False, "state": "not built", "reason": None, "isa": None}
        lib = (info or {}).get("libraries", {}).get(rt)
        if info is None and not path.is_file():
            entry["reason"] = f"not built (run `{REBUILD}`)"
        elif info is not None and not path.is_file() and (not lib or lib.get("status") != "built"):
            entry["reason"] = (lib or {}).get("reason") or info.get("reason") or "not built"
        else:
            try:
                entry["isa"] = check_for_load(rt, path, versions)["isa"]
                entry["usable"], entry["state"] = True, "ready"
            except NativeOpsError as e:
                entry["state"], entry["reason"] = e.state, str(e)
        out["libraries"][rt] = entry
    out["package"] = _package_status(versions)
    out["in_use"] = _in_use(out)
    first = next(iter(out["in_use"].values()), None)
    out["kernel"] = kernel_info(first["path"]) if first else None
    return out


# ---------------------------------------------------------------------------------------------------------
# CLI.

_LABEL = {"ort": "onnxruntime", "openvino": "openvino"}


def _summary_build(info: dict) -> str:
    lines = []
    if info.get("status") == "ok":
        how = "up to date (cached)" if info.get("cached") else f"built in {info.get('build_seconds')} s"
        lines.append(f"gatekit native ops: {how}")
    else:
        lines.append(f"gatekit native ops: build FAILED: {info.get('reason')}")
    lines.append(f"  dir:  {info.get('dir')}")
    compiled = info.get("isa_compiled")
    isa = f"  CPU:  {info.get('machine')}, best kernel path {info.get('cpu_isa')}"
    if compiled:
        isa += f" (paths compiled: {', '.join(compiled)})"
    lines.append(isa)
    for rt in RUNTIMES:
        lib = (info.get("libraries") or {}).get(rt)
        if not lib:
            continue
        ver = (info.get("runtimes") or {}).get(_LABEL[rt])
        label = f"{_LABEL[rt]} {ver}" if ver else _LABEL[rt]
        if lib.get("status") == "built":
            extra = (
                f" (ORT API {lib.get('ort_api_version')}, onnxruntime >= {lib.get('min_onnxruntime')})"
                if rt == "ort"
                else ""
            )
            lines.append(f"  {label}: {Path(lib['path']).name}{extra}")
        else:
            lines.append(f"  {label}: {lib.get('status')}: {lib.get('reason')}")
    return "\n".join(lines)


def _summary_status(st: dict) -> str:
    lines = [f"gatekit native ops: op cache {st['dir']}"]
    if st["source_dir"] is None:
        lines.append("  sources: not found (this install carries none: reinstall gatekit from its sdist or a checkout)")
    if st["stale"]:
        lines.append("  note: the sources changed since this build; run `python -m gatekit.native_ops build`")
    lines.append(f"  CPU: {st['machine']}, best kernel path {st['cpu_isa']}")
    lines.extend(_summary_kernel(st))
    b = st.get("build") or {}
    if b.get("created"):
        lines.append(
            f"  built {b['created']} in {b.get('build_seconds')} s with {(b.get('tools') or {}).get('cxx_version')}"
        )
    for rt in RUNTIMES:
        e = st["libraries"][rt]
        ver = st["runtimes"][_LABEL[rt]]
        label = f"{_LABEL[rt]} {ver}" if ver else f"{_LABEL[rt]} (not installed)"
        if e["usable"]:
            lines.append(f"  {label}: ready: {e['path']} (kernel path {e['isa']})")
        else:
            unbuilt = e["state"] in ("missing", "not built")  # else the reason says what was refused and why
            lines.append(f"  {label}: " + (f"unavailable: {e['reason']}" if unbuilt else e["reason"]))
    lines.extend(_summary_package(st))
    return "\n".join(lines)


def _summary_kernel(st: dict) -> list[str]:
    """Which library each runtime loads and the kernel path it runs on this CPU (asked of the library itself)."""
    in_use = st.get("in_use") or {}
    if not in_use:
        return ["  in use: none (dynamic graphs run their standard-ops fallback; `gatekit ops build` builds the ops)"]
    lines = [
        "  in use: "
        + "; ".join(f"{_LABEL[rt]}: {Path(u['path']).name} from the {u['from']}" for rt, u in in_use.items())
    ]
    info = st.get("kernel") or {}
    if "isa_selected" in info:
        tiles = "yes" if info.get("conv2_channel_tiles") else "no (AVX-512 only)"
        dots = "yes" if info.get("conv1_channel_dots") else "no (AVX-512 only)"
        compiled = ", ".join(info.get("isa_compiled") or [])
        lines.append(
            f"  kernel path in use: {info['isa_selected']}; conv2 output-channel tiles: {tiles}; "
            f"conv1 channel dots on small maps: {dots} (paths compiled: {compiled})"
        )
    return lines


def _summary_package(st: dict) -> list[str]:
    """The libraries the installed package carries (gatekit/_ops/), when it carries a record of them."""
    pkg = st.get("package") or {}
    rec = pkg.get("record")
    if not rec:
        return []
    tools = rec.get("tools") or {}
    lines = [f"  package: {pkg['dir']} (built {rec.get('created')} with {tools.get('cxx_version') or 'no compiler'})"]
    for rt in RUNTIMES:
        e = pkg["libraries"][rt]
        lines.append(f"    {_LABEL[rt]}: " + (f"ready: {e['path']}" if e["usable"] else f"not usable: {e['reason']}"))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gatekit.native_ops", description="Build or inspect gatekit's native gated-block op libraries."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the libraries for the installed runtimes (cached)")
    b.add_argument("--force", action="store_true", help="rebuild even if a current build exists")
    b.add_argument("--jobs", "-j", type=int, default=2, help="parallel compile jobs (default 2)")
    b.add_argument("--verbose", "-v", action="store_true", help="show the CMake and compiler output")
    b.add_argument("--json", action="store_true", help="print build.json instead of a summary")
    s = sub.add_parser("status", help="show what is built, where, and whether it fits the installed runtimes")
    s.add_argument("--json", action="store_true", help="print a JSON report")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        info = build(force=args.force, jobs=args.jobs, verbose=args.verbose)
        print(json.dumps(info, indent=2) if args.json else _summary_build(info))
        return 0 if info.get("status") == "ok" else 1
    st = status()
    print(json.dumps(st, indent=2) if args.json else _summary_status(st))
    return 0


if __name__ == "__main__":
    sys.exit(main())
