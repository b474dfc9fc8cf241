"""Runs a click command as a program: a user error becomes one line on stderr and an exit status, never a
traceback (shared by `gatekit` and `python -m gatekit.demo`)."""

from __future__ import annotations

import sys

import click

from gatekit.errors import GatekitError


def run_click(command: click.Command, argv: list[str] | None, prog_name: str, label: str) -> None:
    """Runs `command` and exits: usage errors name the command and its --help (click's status), gatekit
    errors are "`label`: error: ..." (status 2), Ctrl-C and aborts exit 130."""
    try:
        rv = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line that names the flag, not click's usage block
        where = e.ctx.command_path if e.ctx is not None else prog_name
        click.echo(f"{where}: error: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except GatekitError as e:
        click.echo(f"{label}: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
