"""Fetching and unpacking the official dataset archives: md5 check, network probe, safe tar extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from gatekit.errors import GatekitError

CHUNK = 1 << 20


def md5_file(path: str | os.PathLike) -> str:
    """Hex md5 digest of the file at `path`, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """Raises GatekitError unless the md5 of `path` is `expected`."""
    actual = md5_file(path)
    if actual != expected.lower():
        raise GatekitError(f"checksum mismatch for {path}: md5 is {actual}, expected {expected}")


def network_reachable(url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to `url`'s host opens within `timeout` seconds."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def download_file(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Streams `url` to a temporary file beside `dest`, checks its md5, then renames it onto `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} to {dest}", file=sys.stderr)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, CHUNK)
        verify_md5(tmp, md5)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise GatekitError(f"download of {url} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuses a tar member that could write outside the extraction folder or is not a plain file/folder."""
    path = PurePosixPath(member.name)
    drive = bool(path.parts) and ":" in path.parts[0]
    if path.is_absolute() or member.name.startswith(("/", "\\")) or ".." in path.parts or drive:
        raise GatekitError(f"refusing unsafe path {member.name!r} in archive {archive}")
    if not (member.isfile() or member.isdir()):
        raise GatekitError(f"refusing member {member.name!r} in archive {archive}: not a regular file or folder")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extracts the tar `archive` into `dest`, refusing absolute paths, `..`, links and devices.

    Members go to a temporary folder inside `dest` first; each top-level entry is then renamed into
    `dest`, so an interrupted extraction never leaves a half-written dataset folder behind.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters; members were checked above
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise GatekitError(f"corrupt archive {archive}: {e}") from e
        for entry in staging.iterdir():
            target = dest / entry.name
            if target.exists():
                raise GatekitError(f"cannot extract {archive}: {target} already exists")
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
