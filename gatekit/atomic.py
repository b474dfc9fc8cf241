"""Atomic file writes: write to a temporary file in the same directory, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator


# atomic_path's temporary files are `.{name}.XXXXXXXX.tmp` beside the target (mkstemp's 8 random characters)
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
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
