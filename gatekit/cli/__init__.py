"""The `gatekit` command line. Heavy imports (torch) happen inside the commands that need them, so the
deploy-side commands start on a device that carries only numpy and its runtime."""

from __future__ import annotations

import click

from gatekit import __version__
from gatekit.cli.bench import accuracy_cmd, bench_cmd, report_cmd
from gatekit.cli.export import engine_cmd, export_cmd
from gatekit.cli.ops import ops_group
from gatekit.cli.pick import compare_cmd, pick_cmd, profile_cmd
from gatekit.cli.train import eval_cmd, prune_cmd, train_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gatekit")
def cli() -> None:
    """gatekit: train a dense + channel-gated encoder, export it, benchmark it, pick the budget.

    \b
    Example:
      gatekit train --recipe cpu-small --data-dir ../shared/datasets --out runs/dual
      gatekit eval runs/dual --knn --linear --json runs/dual/eval.json
    """


for _command in (
    train_cmd,
    eval_cmd,
    prune_cmd,
    export_cmd,
    engine_cmd,
    bench_cmd,
    accuracy_cmd,
    report_cmd,
    profile_cmd,
    pick_cmd,
    compare_cmd,
    ops_group,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    from gatekit.cli.runner import run_click

    run_click(cli, argv, "gatekit", "gatekit")
