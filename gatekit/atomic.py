"""Atomic file writes: write to a temporary file in the same directory, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

# atomic_path's temporary files are `.{name}.XXXXXXXX.tmp` beside the target (8 random characters)
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Temporary files that atomic writes left in `directory` (a process killed between writing and renaming)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _TEMP.match(p.name) and p.is_file() and not p.is_symlink())


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Removes `stale_temps(directory)`; returns what was removed. Call it only where no other process is
    writing into `directory` (a run directory when its training starts)."""
    removed = []
    for p in stale_temps(directory):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _new_temp(path: Path) -> Path:
    """A new empty file `.{name}.XXXXXXXX.tmp` beside `path`, created with the mode every new file of this process
    gets (0666 less the umask), as the files written beside it are (mkstemp's are 0600: a manifest that other
    users could not read beside an artifact they can)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
