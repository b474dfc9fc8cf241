"""Writes gatekit/_ops/build.json of a package build (package.cmake runs it after the libraries are installed);
with --find-openvino alone, prints where this Python's openvino keeps its CMake files, and its version.

The record has the schema of gatekit.native_ops' op-cache record (gatekit.native_ops.write_package_record);
it is imported from the source tree this file sits in, since the package being built is not installed yet.
"""

import argparse
import importlib.metadata
import importlib.util
import sys
from pathlib import Path


def find_openvino() -> str:
    """'<openvino's cmake folder>|<openvino version>' of this Python's openvino wheel, or ''."""
    spec = importlib.util.find_spec("openvino")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "cmake" / "OpenVINOConfig.cmake").is_file():
            return f"{Path(loc) / 'cmake'}|{importlib.metadata.version('openvino')}"
    return ""


def main() -> int:
    if sys.argv[1:] == ["--find-openvino"]:  # package.cmake: is openvino installed here?
        sys.stdout.write(find_openvino())
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from gatekit.native_ops import write_package_record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops-dir", required=True, help="the installed gatekit/_ops/ folder")
    ap.add_argument("--source", required=True, help="the native/ sources the libraries were built from")
    ap.add_argument("--machine", required=True, help="CMAKE_SYSTEM_PROCESSOR of the target")
    ap.add_argument("--isa", default="", help="kernel paths compiled, comma-separated")
    ap.add_argument("--compiler", default="", help="compiler id and version")
    ap.add_argument("--cmake", default="", help="CMake version")
    ap.add_argument("--openvino-version", default="", help="the OpenVINO release the extension was built against")
    ap.add_argument("--ort-reason", default="", help="why the ONNX Runtime library was not built")
    ap.add_argument("--openvino-reason", default="", help="why the OpenVINO extension was not built")
    ap.add_argument("--no-probe", action="store_true", help="do not load the libraries (a cross build)")
    a = ap.parse_args()
    info = write_package_record(
        Path(a.ops_dir),
        source=Path(a.source),
        machine=a.machine,
        isa_compiled=[p for p in a.isa.split(",") if p],
        compiler=a.compiler or None,
        cmake_version=a.cmake or None,
        openvino_version=a.openvino_version or None,
        reasons={"ort": a.ort_reason, "openvino": a.openvino_reason},
        probe=not a.no_probe,
    )
    for rt, lib in info["libraries"].items():
        state = f"{lib['path']} sha256 {lib['sha256'][:16]}..." if lib["status"] == "built" else lib["reason"]
        print(f"gatekit ops: package {rt}: {lib['status']}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
