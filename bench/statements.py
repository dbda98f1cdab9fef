"""Where a write's time goes in the database, per statement, on SQLite and PostgreSQL alike.

`bench/pages.py` counts the pages a batch dirties (SQLite only); this times each statement the
batch sends (SQLAlchemy's cursor events) and the commits, so a batch on an empty warehouse and the
same batch on a large one can be compared statement by statement: which reads, inserts or deletes
grew with the history, and how much of the growth is the commits (SQLite's WAL checkpoints,
PostgreSQL's WAL flush) rather than any statement. Diagnostic only: the action runs as usual.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable

import sqlalchemy as sa

COMMIT = "(commits)"
TOTAL = "(the whole action)"


def statement_label(statement: str) -> str:
    """A statement's kind and table, e.g. `SELECT ev_charging_sessions` or `INSERT ev_charging_events`
    (a read's label is its first FROM table; enough to tell the steps' statements apart)."""
    text = " ".join(statement.split())
    verb = text.split(" ", 1)[0].upper()
    pattern = {"INSERT": r"INSERT INTO (\S+)", "DELETE": r"DELETE FROM (\S+)", "UPDATE": r"UPDATE (\S+)"}.get(
        verb, r"FROM (\w+)"
    )
    found = re.search(pattern, text, re.IGNORECASE)
    return f"{verb} {found.group(1).strip(chr(34)) if found else '?'}"


def statement_times(engine: sa.Engine, action: Callable[[], object]) -> dict[str, float]:
    """Seconds `action` spent in each kind of statement sent through `engine` (executemany and
    COPY included, as the cursor executes them), in its commits, and in all, largest first."""
    spent: dict[str, float] = defaultdict(float)
    started: list[float] = []

    def before(_conn, _cursor, _statement, _parameters, _context, _executemany) -> None:
        started.append(time.perf_counter())

    def after(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        spent[statement_label(statement)] += time.perf_counter() - started.pop()

    def commit(conn) -> None:
        # The "commit" event fires before the DBAPI commit: time the commit itself around it.
        dbapi = conn.connection.dbapi_connection
        began = time.perf_counter()
        dbapi.commit()
        spent[COMMIT] += time.perf_counter() - began

    listeners = (("before_cursor_execute", before), ("after_cursor_execute", after), ("commit", commit))
    for name, fn in listeners:
        sa.event.listen(engine, name, fn)
    try:
        began = time.perf_counter()
        action()
        spent[TOTAL] = time.perf_counter() - began
    finally:
        for name, fn in listeners:
            sa.event.remove(engine, name, fn)
    return dict(sorted(spent.items(), key=lambda item: item[1], reverse=True))
