"""Durable, atomic payload files in the landing folder.

A payload is written to a temporary name the feed never lists (`.tmp-<uuid>`, not `*.json`) in the
landing folder itself (so the rename cannot cross file systems), flushed and fsynced, renamed into
place, and the folder is fsynced so the rename itself survives a crash. Only then does the caller
answer 2xx: an acknowledged payload is on disk, under its final name, whole.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def stream_file_name(now: datetime | None = None) -> str:
    """`stream-<UTC time to the microsecond>-<uuid>.json`: unique, and sorts by arrival."""
    now = now or datetime.now(UTC)
    return f"stream-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex}.json"


def write_durably(landing_dir: Path, content: bytes, name: str | None = None) -> Path:
    """Write `content` as `landing_dir/name` so that it is whole and on disk when this returns."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    name = name or stream_file_name()
    temporary = landing_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    final = landing_dir / name
    os.rename(temporary, final)
    fsync_dir(landing_dir)
    return final


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(landing_dir: Path, older_than_s: float = 600.0) -> int:
    """Temporary files a crashed receiver left (never acknowledged), removed at start; only old
    ones, so another receiver writing into the same folder keeps its files in flight."""
    count = 0
    if landing_dir.exists():
        limit = time.time() - older_than_s
        for path in landing_dir.glob(f"{TEMP_PREFIX}*"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink(missing_ok=True)
                    count += 1
            except FileNotFoundError:
                pass
    return count
