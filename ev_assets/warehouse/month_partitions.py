"""PostgreSQL: the month partitions of the history tables (migration 0022), made ahead and retired.

The tables declared with `partition_by_month` (ev_assets.warehouse.tables) are RANGE-partitioned by
month on PostgreSQL: `<table>_pYYYY_MM` holds [the first day of the month, the first of the next),
and `<table>_default` takes a row of any month without its partition, so no write ever fails for
want of one. Here:

- `ensure_month_partitions`: the partitions of this month and the next `months_ahead`, and of
  every month that has rows in DEFAULT (PostgreSQL refuses a partition whose range DEFAULT holds
  rows of: they are moved into it, in the same transaction). Idempotent; `ev-awareness db upgrade`,
  `init` and a daily Dagster schedule call it.
- `detach_month`: retention, a month of every partitioned table at once, detached (kept as a plain
  table `<partition>_detached`, to archive with pg_dump) or dropped.
- `list_partitions`: each partition, its range and its rows.

SQLite keeps plain tables: every function here does nothing there (an empty list).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ev_assets.warehouse.tables import PARTITIONED_TABLES, TableSpec

DETACHED_SUFFIX = "_detached"
_BOUND = re.compile(r"FOR VALUES FROM \('(\d{4}-\d{2}-\d{2})'\) TO \('(\d{4}-\d{2}-\d{2})'\)")


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    start: date | None  # None: the DEFAULT partition
    end: date | None
    rows: int | None = None


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def parse_month(text: str) -> date:
    """`YYYY-MM` as the month's first day."""
    if not re.fullmatch(r"\d{4}-\d{2}", text):
        raise ValueError(f"{text!r} is not a month (YYYY-MM)")
    return datetime.strptime(text, "%Y-%m").date()


def partition_name(spec: TableSpec, month: date) -> str:
    return f"{spec.name}_p{month:%Y_%m}"


def default_name(spec: TableSpec) -> str:
    return f"{spec.name}_default"


def partitioned_tables(conn: Connection) -> list[TableSpec]:
    """The declared month-partitioned tables that are partitioned in this database (none on SQLite,
    or before migration 0022)."""
    if conn.dialect.name != "postgresql":
        return []
    held = set(
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
                "WHERE c.relnamespace = CAST(current_schema() AS regnamespace)"
            )
        ).scalars()
    )
    return [spec for spec in PARTITIONED_TABLES if spec.name in held]


def _partitions(conn: Connection, spec: TableSpec) -> list[Partition]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass) ORDER BY c.relname"
        ),
        {"t": spec.name},
    ).all()
    found = []
    for name, bound in rows:
        match = _BOUND.fullmatch(bound)
        start, end = (date.fromisoformat(match[1]), date.fromisoformat(match[2])) if match else (None, None)
        found.append(Partition(spec.name, name, start, end))
    return sorted(found, key=lambda p: (p.start is None, p.start or date.min))


@contextmanager
def _write_locked(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the warehouse's write lock exclusively (as Warehouse.transaction with
    no scope takes it): partitions change between writers, never under one."""
    from ev_assets.warehouse.store import take_write_lock

    with engine.connect() as conn, conn.begin():
        take_write_lock(conn)
        yield conn


def ensure_month_partitions(engine: Engine, months_ahead: int, today: date | None = None) -> list[str]:
    """Create the missing partitions of this month (UTC `today`) and the `months_ahead` after it,
    and of every month DEFAULT holds rows of, moving those rows into them. Returns the partitions
    created (none when all exist: idempotent)."""
    if months_ahead < 0:
        raise ValueError("months_ahead must be >= 0")
    first = month_start(today or datetime.now(UTC).date())
    ahead = [first]
    for _ in range(months_ahead):
        ahead.append(next_month(ahead[-1]))
    created: list[str] = []
    with engine.connect() as conn:
        specs = partitioned_tables(conn)
    for spec in specs:
        with _write_locked(engine) as conn:
            created += _ensure_table(conn, spec, ahead)
    return created


def _ensure_table(conn: Connection, spec: TableSpec, ahead: list[date]) -> list[str]:
    column = spec.partition_by_month
    existing = _partitions(conn, spec)
    held = {p.start for p in existing if p.start is not None}
    default = default_name(spec)
    in_default = set(
        conn.execute(
            sa.text(f'SELECT DISTINCT CAST(date_trunc(\'month\', "{column}") AS date) FROM "{default}"')
        ).scalars()
    )
    created = []
    for month in sorted((set(ahead) | in_default) - held):
        name, low, high = partition_name(spec, month), month.isoformat(), next_month(month).isoformat()
        if month in in_default:
            # PostgreSQL refuses a partition whose range DEFAULT holds rows of: a plain table first,
            # the month's rows moved into it out of DEFAULT, then attached (which builds its indexes
            # and key from the parent's, and checks DEFAULT no longer holds any of the month).
            conn.exec_driver_sql(f'CREATE TABLE "{name}" (LIKE "{spec.name}" INCLUDING DEFAULTS)')
            conn.exec_driver_sql(
                f'WITH moved AS (DELETE FROM "{default}" WHERE "{column}" >= \'{low}\' AND "{column}" < \'{high}\' '
                f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved'
            )
            conn.exec_driver_sql(
                f"ALTER TABLE \"{spec.name}\" ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{low}') TO ('{high}')"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE TABLE \"{name}\" PARTITION OF \"{spec.name}\" FOR VALUES FROM ('{low}') TO ('{high}')"
            )
        created.append(name)
    return created


def list_partitions(engine: Engine, *, count_rows: bool = True) -> list[Partition]:
    """Every partition of every partitioned table, by table and month (DEFAULT last), with its rows
    counted exactly when `count_rows` (a scan of each: seconds on a large history)."""
    found = []
    with engine.connect() as conn:
        for spec in partitioned_tables(conn):
            for p in _partitions(conn, spec):
                rows = conn.execute(sa.text(f'SELECT count(*) FROM "{p.name}"')).scalar_one() if count_rows else None
                found.append(Partition(p.table, p.name, p.start, p.end, rows))
    return found


def detach_month(engine: Engine, month: date, *, drop: bool = False, today: date | None = None) -> list[str]:
    """Detach the partition of `month` (its first day) from every partitioned table, in one
    transaction; keep each as a plain table `<partition>_detached`, or drop it (`drop`). Only a
    month before the current one (UTC `today`): the pipeline still writes this month. Returns the
    partitions detached (empty when none held the month)."""
    month = month_start(month)
    current = month_start(today or datetime.now(UTC).date())
    if month >= current:
        raise ValueError(f"{month:%Y-%m} is not before the current month {current:%Y-%m}: only past months retire")
    done = []
    with engine.connect() as probe:
        specs = partitioned_tables(probe)
    if not specs:
        return done
    with _write_locked(engine) as conn:
        for spec in specs:
            held = {p.start: p for p in _partitions(conn, spec)}
            if month not in held:
                continue
            name = held[month].name
            conn.exec_driver_sql(f'ALTER TABLE "{spec.name}" DETACH PARTITION "{name}"')
            if drop:
                conn.exec_driver_sql(f'DROP TABLE "{name}"')
            else:
                conn.exec_driver_sql(f'ALTER TABLE "{name}" RENAME TO "{name}{DETACHED_SUFFIX}"')
            done.append(name)
    return done
