"""Which tables and indexes a write dirties, on SQLite: the pages its commits put in the WAL.

A batch's cost on a large warehouse follows the pages it reads, modifies and writes back, and
those follow the indexes it inserts into: on an empty warehouse the places where 2,000 meters'
rows go share a few pages of each meter-keyed index, on a large one each is a page of its own.
This counts them per b-tree, so a change of indexes can be judged by pages, not only by seconds.

How: checkpoints are turned off for the action's connections and one extra connection stays open
(so closing the others neither checkpoints nor deletes the WAL); every WAL frame header names its
page; SQLite's `dbstat` table names each page's b-tree. Diagnostic only: the WAL is checkpointed
first and afterwards, and the action runs as usual otherwise.
"""

from __future__ import annotations

import sqlite3
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

WAL_HEADER, FRAME_HEADER = 32, 24


def wal_pages(wal: bytes) -> Counter[int]:
    """Frames per page number in a WAL file's bytes (the format: sqlite.org/fileformat2.html#walformat)."""
    if len(wal) < WAL_HEADER:
        return Counter()
    page_size = struct.unpack(">I", wal[8:12])[0]
    pages: Counter[int] = Counter()
    for offset in range(WAL_HEADER, len(wal) - FRAME_HEADER + 1, FRAME_HEADER + page_size):
        pages[struct.unpack(">I", wal[offset : offset + 4])[0]] += 1
    return pages


def dirtied_pages(db_path: Path, engine: sa.Engine, action: Callable[[], object]) -> dict[str, int]:
    """Distinct pages `action` (writing through `engine`, which must not be connected yet) dirtied
    in `db_path`, per table or index, largest first."""
    holder = sqlite3.connect(db_path)
    try:
        holder.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        @sa.event.listens_for(engine, "connect")
        def _no_checkpoints(dbapi_connection, _record) -> None:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

        action()
        engine.dispose()
        pages = wal_pages(Path(f"{db_path}-wal").read_bytes())
        owners = Counter(name for name, page in holder.execute("SELECT name, pageno FROM dbstat") if page in pages)
        owners["(new or freed pages)"] = len(pages) - sum(owners.values())
        holder.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {name: n for name, n in owners.most_common() if n}
    finally:
        holder.close()
