"""`gatekit ops build` and `gatekit ops status`: gatekit's native custom ops for ONNX Runtime and OpenVINO."""

from __future__ import annotations

import sys

import click

from gatekit.cli.options import write_json_if_asked
from gatekit.paths import check_outputs


@click.group("ops")
def ops_group() -> None:
    """gatekit's native custom ops (the fused gated blocks of dynamic graphs) for ONNX Runtime and OpenVINO.

    \b
    Example:
      gatekit ops build     # CMake + a C++17 compiler; cached per runtime version and CPU
      gatekit ops status    # what was built, where, for which runtime versions, and why not
    """


@ops_group.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when a current build exists.")
@click.option("--jobs", default=2, show_default=True, type=click.IntRange(min=1), help="Parallel compile jobs.")
@click.option("--verbose", is_flag=True, help="Show CMake's and the compiler's output.")
@click.option("--json", "json_path", type=click.Path(), help="Write the build record as JSON here.")
def ops_build(force, jobs, verbose, json_path):
    """Build the op libraries for the installed runtimes (exit 1 when nothing could be built)."""
    check_outputs(files={"--json": json_path})
    from gatekit import native_ops

    info = native_ops.build(force=force, jobs=jobs, verbose=verbose)
    write_json_if_asked(json_path, info)
    if info.get("status") != "ok" and not info.get("libraries"):  # nothing compiled: a tool or the sources missing
        click.echo(
            f"gatekit: error: cannot build the native ops: {info.get('reason')}; dynamic graphs run their "
            "standard-ops fallback meanwhile",
            err=True,
        )
        sys.exit(1)
    click.echo(native_ops._summary_build(info))
    if info.get("status") != "ok":
        sys.exit(1)


@ops_group.command("status")
@click.option("--json", "json_path", type=click.Path(), help="Write the status as JSON here.")
def ops_status(json_path):
    """What is built, where, and whether it fits the installed runtimes."""
    check_outputs(files={"--json": json_path})
    from gatekit import native_ops

    st = native_ops.status()
    click.echo(native_ops._summary_status(st))
    write_json_if_asked(json_path, st)
