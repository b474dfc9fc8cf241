"""Output locations, checked before a command does its work: a path that cannot be written is one line
(naming the flag and the path) at the start, never a traceback after minutes of training or timing."""

from __future__ import annotations

import os
from pathlib import Path

from gatekit.errors import GatekitError


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (what mkdir(parents=True) would create under)."""
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _check_creatable_under(path: Path, flag: str) -> None:
    """The directories above `path` exist as directories (or can be made) and the nearest one is writable."""
    base = _nearest_existing(path.parent if path.parent != path else path)
    if base.exists() and not base.is_dir():
        raise GatekitError(f"{flag} {path}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise GatekitError(f"{flag} {path}: directory {base} is not writable")


def check_output_file(path: str | os.PathLike | None, flag: str) -> None:
    """An output file (--json, --html, a LUT, a page): refused when it is a directory, when a directory above
    it is a file, or when the directory it goes in is not writable."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise GatekitError(f"{flag} {p}: is a directory, expected a file path")
    if os.path.lexists(p) and not p.is_file():
        raise GatekitError(f"{flag} {p}: exists and is not a regular file")
    if not p.exists():
        _check_creatable_under(p, flag)
    elif not os.access(p.parent, os.W_OK | os.X_OK):  # atomic writes put a temporary file beside it
        raise GatekitError(f"{flag} {p}: directory {p.parent} is not writable")


def check_output_dir(path: str | os.PathLike | None, flag: str) -> None:
    """An output directory (--out DIR): refused when it exists as a file, when a directory above it is a
    file, or when it (or the directory it would be made in) is not writable."""
    if not path:
        return
    p = Path(path)
    if os.path.lexists(p) and not p.is_dir():
        raise GatekitError(f"{flag} {p}: exists and is not a directory")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise GatekitError(f"{flag} {p}: directory is not writable")
        return
    _check_creatable_under(p, flag)


def check_outputs(
    files: dict[str, str | os.PathLike | None] | None = None, dirs: dict[str, str | os.PathLike | None] | None = None
) -> None:
    """Every output of a command ({flag: path}); None paths (flags not given) are skipped."""
    for flag, path in (dirs or {}).items():
        check_output_dir(path, flag)
    for flag, path in (files or {}).items():
        check_output_file(path, flag)
