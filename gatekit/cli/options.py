"""What several commands share: the --trust-edited flag, the --json output, comma-list choices."""

from __future__ import annotations

import click

from gatekit.errors import GatekitError


def write_json_if_asked(path: str | None, data: dict) -> None:
    """Writes `data` to `path` (a --json option) when one was given."""
    if path:
        from gatekit.atomic import write_json

        write_json(path, data)


def trust_edited_option(f):
    """--trust-edited: read artifacts whose files differ from their manifest (edited on purpose)."""
    return click.option(
        "--trust-edited",
        is_flag=True,
        help="Read artifacts whose files differ from the sha256 (or the names) in their manifest, "
        "e.g. edited on purpose; bench records say so. Default: refuse them.",
    )(f)


def apply_trust_edited(trust: bool) -> None:
    """Artifacts opened by this command are checked against their manifests unless --trust-edited."""
    from gatekit.artifacts import set_file_verification

    set_file_verification(not trust)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(lambda: set_file_verification(True))


def parse_choices(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """A comma list of `allowed` names, or all of them for "all"; an unknown name is one line naming `what`."""
    if value == "all":
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise GatekitError(f"unknown {what} {(bad[0] if bad else value)!r}: choose from {', '.join(allowed)} or all")
    return items
