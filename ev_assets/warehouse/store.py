"""The warehouse layer: SQLAlchemy Core over any SQLAlchemy URL (SQLite by default, PostgreSQL in
production). Frames in, frames out; bound parameters only; every write in one transaction.

Nothing here knows about Dagster: the Dagster resource in `ev_assets.defs.resources` wraps it.
The schema is Alembic's (`ev_assets.warehouse.migrate`): this module checks it, never changes it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from ev_assets.core.events import ID_END
from ev_assets.warehouse import migrate
from ev_assets.warehouse.migrate import SchemaBehindError, SchemaError  # noqa: F401  (re-exported)
from ev_assets.warehouse.tables import ALL_TABLES, EV_EVENT_COMMITS, EV_WAREHOUSE_SETTINGS, UTC_DATETIME, TableSpec


class WarehouseSettingsError(RuntimeError):
    """The configuration contradicts what the warehouse recorded (ev_warehouse_settings)."""


# SQLite caps bound parameters per statement (32,766 on recent builds, 999 on old ones); chunks of
# this many keep IN lists and multi-row inserts well inside either limit.
IN_CHUNK = 900

# Writers are serialised by the database itself, never by an orchestrator setting: every
# `Warehouse.transaction()` takes the database's write lock first (PostgreSQL: this transaction-level
# advisory lock key; SQLite: BEGIN IMMEDIATE). The lock ends with the transaction (commit, rollback,
# or the connection dying with its process), so no crashed writer keeps it.
WRITE_LOCK_KEY = 0x45565F5752495445  # "EV_WRITE" as a bigint
# The lock under which a writing transaction numbers its commit (record_event_commit): taken last,
# just before the commit, so writers that run in parallel serialise only on the commit itself.
COMMIT_SEQ_LOCK_KEY = 0x45565F434F4D4954  # "EV_COMIT" as a bigint

# PostgreSQL: the write lock is scoped to what a transaction writes. Three kinds of advisory lock,
# always taken in this order, each kind in ascending key order, one statement per key, so two
# writers never wait for each other in a cycle (no deadlock):
#   1. the warehouse lock, WRITE_LOCK_KEY: exclusive for a writer whose rows are not confined to
#      some meters or days (a reference load, a rebuild, a snapshot), which therefore excludes every
#      other writer as the single lock did; shared for a scoped writer, so scoped writers run
#      together and an exclusive writer waits for all of them;
#   2. meter shards, SHARD_LOCK_KEY + shard (0 <= shard < WRITE_SHARDS): an ingest batch takes the
#      shards of its meters and files (`shards_of`), the pairing of batches the shards of their
#      meters;
#   3. days, DAY_LOCK_KEY + date.toordinal(): a daily-load range takes its days and the day
#      before (whose end-of-day thermal state it starts from).
# The commit-sequence lock (record_event_commit) comes last of all, just before the commit.
# SQLite keeps one writer at a time (BEGIN IMMEDIATE) and ignores the scope.
WRITE_SHARDS = 64
SHARD_LOCK_KEY = 0x45565F5348415244  # "EV_SHARD"
DAY_LOCK_KEY = 0x45565F4441590000  # "EV_DAY\0\0" + ordinal (a date's ordinal is under 2**20)

# read_nearest_ids on month partitions: the days next to the bound sought first (a month, a year).
NEAREST_FIRST_DAYS = (31, 366)
ALL_SHARDS: tuple[int, ...] = tuple(range(WRITE_SHARDS))


def shards_of(keys: Iterable[str]) -> list[int]:
    """The write-lock shards of these keys (meter ids, file digests), sorted: CRC-32 of the key's
    UTF-8 bytes modulo WRITE_SHARDS, the same in every process and Python version (`hash()` of a
    str is salted per process). One call per distinct key, not per row."""
    return sorted({shard_of(key) for key in set(keys) if key is not None})


def take_write_lock(conn: Connection, *, shared: bool = False, keys: Sequence[int] = ()) -> None:
    """PostgreSQL: take the write lock in this transaction (see WRITE_LOCK_KEY): the warehouse lock
    (shared for a scoped writer, else exclusive), then `keys` (shard and day locks) in the given
    order, each waiting at most EV_LOCK_WAIT_S."""
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{int(lock_wait_s() * 1000)}ms'"))
    warehouse_lock = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    conn.execute(sa.text(f"SELECT {warehouse_lock}(:key)"), {"key": WRITE_LOCK_KEY})
    # One statement per key, in the order above: the order is the deadlock rule, and a single
    # statement over a set of keys does not promise one.
    take = sa.text("SELECT pg_advisory_xact_lock(:key)")
    for key in keys:
        conn.execute(take, {"key": key})


def try_shard_lock(conn: Connection, shard: int) -> bool:
    """PostgreSQL: take a shard's lock in this transaction if no other writer holds it, without
    waiting (so it may be taken out of the lock order: a try cannot deadlock)."""
    take = sa.text("SELECT pg_try_advisory_xact_lock(:key)")
    return bool(conn.execute(take, {"key": SHARD_LOCK_KEY + shard}).scalar_one())


def shard_of(key: str) -> int:
    """The write-lock shard of one key (see shards_of)."""
    return zlib.crc32(key.encode()) % WRITE_SHARDS


def lock_wait_s() -> float:
    """How long a writer waits for the lock before failing (the SQLite busy timeout, and
    PostgreSQL's lock_timeout inside a writing transaction): EV_LOCK_WAIT_S, read per engine."""
    from ev_assets.settings import Settings

    return Settings().lock_wait_s


def make_engine(url: str) -> Engine:
    """An engine with the settings each dialect needs for this workload."""
    sa_url = sa.engine.make_url(url)
    if sa_url.get_backend_name() == "postgresql":
        # No JIT compilation: the pipeline's statements are short, and the cost estimates of its
        # range seeks (read_id_ranges) passed the JIT threshold, which added 0.1 s to each.
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"options": "-c jit=off"})
    if sa_url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if sa_url.database and sa_url.database != ":memory:":
        Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
    wait_s = lock_wait_s()
    engine = sa.create_engine(url, connect_args={"timeout": wait_s})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy's pysqlite recipe ("Serializable isolation / Savepoints / Transactional DDL"):
        # the driver must not BEGIN on its own (it would BEGIN DEFERRED, and only before DML), so
        # the "begin" event below emits the BEGIN that each transaction needs.
        dbapi_connection.isolation_level = None
        # SQLite allows one writer at a time: WAL lets readers go on while a writer writes, and
        # the busy timeout makes a second writer wait for the lock instead of failing at once.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A 64 MiB page cache (the default is 2 MiB, 500 pages): on a large warehouse a batch
        # touches a leaf page per meter in each meter-keyed index (2,000 meters: thousands of
        # pages), which the default cache evicts and reads again within the same transaction.
        # Memory is taken as pages are read, so a small warehouse uses little.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # A writing transaction takes the write lock at BEGIN (IMMEDIATE), before its first read,
        # so what it reads to decide what to write cannot change under it; plain reads stay
        # deferred and never wait for a writer (WAL).
        if conn.get_execution_options().get(WRITE_LOCK_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


# SQLite page cache per connection, KiB (make_engine).
SQLITE_CACHE_KIB = 65_536

# Execution option marking a connection whose transactions take the write lock.
WRITE_LOCK_OPTION = "ev_write_lock"


class Warehouse:
    """Tables declared in `ev_assets.warehouse.tables`, on one database at the code's schema revision."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.metadata = sa.MetaData()
        self.tables: dict[str, sa.Table] = {spec.name: spec.sqlalchemy_table(self.metadata) for spec in ALL_TABLES}
        self._schema_checked = False
        self._timezone_ok: str | None = None
        self._zone_of_partitions: str | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def check_schema(self) -> None:
        """Refuse to work on a database that is not at the code's schema revision (checked once per
        Warehouse object). The runtime never creates or alters tables: `ev-awareness db upgrade`
        (ev_assets.warehouse.migrate.upgrade) does, when someone asks it to."""
        if self._schema_checked:
            return
        with self.engine.connect() as conn:
            migrate.check_connection(conn, self.engine.url)
        self._schema_checked = True

    def ensure_timezone(self, tz: str) -> None:
        """Record the time zone the warehouse's local days are computed in, the first time; refuse
        another one afterwards (its days would mix two calendars). Checked once per object and zone."""
        if self._timezone_ok == tz:
            return
        self.check_schema()
        table = self.table(EV_WAREHOUSE_SETTINGS)
        recorded = self.get_setting("timezone")
        if recorded is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(table.insert().values(key="timezone", value=tz, updated_at=datetime.now(UTC)))
                recorded = tz
            except sa.exc.IntegrityError:  # another process recorded one first
                recorded = self.get_setting("timezone")
        if recorded != tz:
            raise WarehouseSettingsError(
                f"this warehouse's days were computed in {recorded}, but EV_TIMEZONE is {tz}: "
                f"set EV_TIMEZONE={recorded}, or rebuild the warehouse"
            )
        self._timezone_ok = tz

    def table(self, spec: TableSpec) -> sa.Table:
        return self.tables[spec.name]

    @contextmanager
    def transaction(
        self, shards: Iterable[int] | None = None, days: Iterable[date] | None = None
    ) -> Iterator[Connection]:
        """One writing transaction: everything inside commits together or not at all, under the
        database's write lock, taken before anything is read.

        PostgreSQL: with neither `shards` nor `days`, the warehouse lock exclusively: no other
        writer runs meanwhile. With either, the warehouse lock shared, then only those meter shards
        (`shards_of` the meters and files the transaction writes) and days (the local days whose
        load it writes): writers of disjoint shards and days run at once. SQLite ignores the scope
        (one writer at a time).

        Writers are serialised by the database (see WRITE_LOCK_KEY): read what decides the writes
        through `conn`, inside the block, and no other writer of the same scope can change it
        before the commit. Keep the block short: every other writer of the scope waits for it (at
        most EV_LOCK_WAIT_S). Never open a second transaction inside one: it would wait for the first.
        """
        self.check_schema()
        scoped = shards is not None or days is not None
        keys = [SHARD_LOCK_KEY + shard for shard in sorted(set(shards or ()))]
        for shard in sorted(set(shards or ())):
            if not 0 <= shard < WRITE_SHARDS:
                raise ValueError(f"write-lock shard {shard} outside 0..{WRITE_SHARDS - 1}")
        keys += [DAY_LOCK_KEY + day.toordinal() for day in sorted(set(days or ()))]
        with self._locked_transaction(shared=scoped, keys=keys) as conn:
            yield conn

    @contextmanager
    def _locked_transaction(self, *, shared: bool, keys: Sequence[int]) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE_LOCK_OPTION: True})
            with conn.begin():  # SQLite: BEGIN IMMEDIATE (make_engine)
                if self.dialect == "postgresql":
                    take_write_lock(conn, shared=shared, keys=keys)
                yield conn

    # --- reads -------------------------------------------------------------------------------

    def read(
        self,
        spec: TableSpec,
        where: sa.ColumnElement[bool] | None = None,
        conn: Connection | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows of `spec` matching `where`, as a frame with the declared types (only `columns`, in
        the table's order, when given: a read of what the caller needs costs less)."""
        self.check_schema()
        query = sa.select(*self.stored_columns(spec, columns))
        if where is not None:
            query = query.where(where)
        return self.query_frame(spec, query, conn, columns)

    def query_frame(
        self, spec: TableSpec, query: sa.Select, conn: Connection | None, columns: Sequence[str] | None
    ) -> pl.DataFrame:
        """A query of `spec`'s stored columns (`columns`, or all) as a frame with the declared types,
        on `conn` or a connection of its own."""
        if conn is None:
            self.check_schema()
            with self.engine.connect() as own:
                return self.query_frame(spec, query, own, columns)
        with gc_paused():
            return rows_to_frame(spec, conn.execute(query).fetchall(), columns)

    def stored_columns(self, spec: TableSpec, names: Sequence[str] | None = None) -> list[sa.ColumnElement]:
        """The table's columns as a read selects them. SQLite keeps timestamps and dates as text:
        they are selected as that text and parsed by polars (rows_to_frame), not turned into Python
        datetime objects one value at a time."""
        columns = [c for c in self.table(spec).columns if names is None or c.name in names]
        if self.dialect != "sqlite":
            return columns
        return [
            sa.type_coerce(c, sa.String).label(c.name) if isinstance(c.type, (sa.DateTime, sa.Date)) else c
            for c in columns
        ]

    def read_in(
        self,
        spec: TableSpec,
        column: str,
        values: Iterable[Any],
        where: sa.ColumnElement[bool] | None = None,
        conn: Connection | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows whose `column` is in `values` (any number of them).

        Where an index starts with `column`, one statement joins the values (bound as one
        parameter, text_rows) to it: a seek per value. An IN list costs a statement of IN_CHUNK
        parameters per chunk: the deduplication of 101,498 new ids took 0.48 s that way, 0.10 s
        joined. A column no index starts with keeps the IN lists, which the database answers with
        one pass over the table rather than one per value."""
        col = self.table(spec).c[column]
        distinct = sorted(set(values))
        if not distinct:
            return empty_frame(spec, columns)
        if spec.leads_an_index(column) and all(isinstance(v, str) for v in distinct):
            self.check_schema()
            ids = self.text_rows(distinct)
            value = sa.type_coerce(ids.c.value, sa.Text)
            # (only when every id has the form: the SQL cast of another would fail the statement)
            formed = self._partition_days_of_ids(spec, column, distinct, conn) is not None
            day = self._partition_day_of_id(spec, column, value, conn) if formed else None
            if day is not None:
                # Month partitions: each id names the one month it can be in, and a subquery per id
                # (LATERAL, OFFSET 0 as in read_id_ranges) seeks only that month's key (run-time
                # pruning). As a join, the planner costs a seek per month per id and hashed the
                # ids against every month instead: 74 s for 10,000 ids on 6 M events.
                found = sa.and_(col == value, self.table(spec).c[spec.partition_by_month] == day)
                found = found if where is None else sa.and_(found, where)
                selected = self.stored_columns(spec, columns)
                per_id = sa.select(*selected).where(found).offset(0).lateral("found")
                query = sa.select(*[per_id.c[c.name] for c in selected]).select_from(ids).join(per_id, sa.true())
                return self.query_frame(spec, query, conn, columns)
            joined = sa.select(*self.stored_columns(spec, columns)).select_from(ids)
            joined = joined.join(self.table(spec), col == value)
            return self.query_frame(spec, joined if where is None else joined.where(where), conn, columns)
        frames = [
            self.read(spec, col.in_(chunk) if where is None else sa.and_(col.in_(chunk), where), conn, columns)
            for chunk in chunked(distinct, IN_CHUNK)
        ]
        return pl.concat(frames)

    def read_id_ranges(
        self,
        spec: TableSpec,
        id_column: str,
        prefixes: Iterable[str],
        low: str,
        high: str,
        conn: Connection | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows whose `id_column` lies in [prefix + low, prefix + high] for one of `prefixes`: one
        range of the primary key per prefix, so a table keyed `meter|time` is read by meter and time
        without an index of its own on (meter_id, time), which every batch would also have to write.

        The ids must sort by code point (`binary` in SQLite, `COLLATE "C"` in PostgreSQL: the
        tables declare it), or a range would not hold all of a prefix's ids. No other condition
        is taken: given one on another column (a time, say), PostgreSQL read the whole table and
        compared every row with every range instead (4.7 s for 4,000 ranges on 20,000 events);
        filter the frame instead."""
        driving = self._prefix_rows(prefixes)
        if driving is None:
            return empty_frame(spec, columns)
        p, prefix = driving
        t = self.table(spec)
        key = t.c[id_column]
        bounded = sa.and_(key >= prefix.concat(low), key <= prefix.concat(high))
        selected = self.stored_columns(spec, columns)
        days = self._partition_days_between(spec, id_column, low, high, conn)
        if days is not None:  # the months the range's times lie in (PostgreSQL prunes the others)
            bounded = sa.and_(bounded, t.c[spec.partition_by_month].between(*days))
        if self.dialect == "postgresql":
            # A range scan of the key per prefix, always: PostgreSQL cannot estimate a range whose
            # ends are computed from the other side, takes each for 0.5 % of the table, and as a
            # plain join read the whole table (20 M events) instead. LATERAL alone is flattened
            # into that join; OFFSET 0 keeps it a subquery run per prefix.
            ranged = sa.select(*selected).where(bounded).offset(0).lateral("ranged")
            query = sa.select(*[ranged.c[c.name] for c in selected]).select_from(p).join(ranged, sa.true())
        else:
            query = sa.select(*selected).select_from(p).join(t, bounded)
        return self.query_frame(spec, query, conn, columns)

    def read_nearest_ids(
        self,
        conn: Connection,
        spec: TableSpec,
        id_column: str,
        prefixes: Iterable[str],
        bound: str,
        *,
        below: bool,
        inclusive: bool = True,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Per prefix, the row with the greatest id at or below prefix + bound (`below`), or the
        least at or above it; `inclusive=False` leaves prefix + bound itself out. One seek per
        prefix on the primary key, however many ids the prefix holds: a correlated max() / min()
        of the key within the prefix, which SQLite and PostgreSQL both answer by descending the
        index once to the first entry past the bound; then the rows of those ids. Ordering as in
        read_id_ranges."""
        prefixes = sorted(set(prefixes))
        if not prefixes:
            return empty_frame(spec, columns)
        if self.dialect == "sqlite":  # each prefix's row looked up by its id, in one statement
            p, prefix, nearest = self._nearest_id(spec, id_column, prefixes, bound, below, inclusive, None)
            t = self.table(spec)
            query = sa.select(*self.stored_columns(spec, columns)).select_from(p).join(t, t.c[id_column] == nearest)
            return self.query_frame(spec, query, conn, columns)
        # The ids first, then their rows by key: in one statement, PostgreSQL may hash the ids and
        # read the whole table for them.
        days = self._partition_days_of_ids(spec, id_column, [bound], conn)
        if days is None:
            found = self._nearest_ids(conn, spec, id_column, prefixes, bound, below, inclusive)
            ids = [i for i in found.values() if i is not None]
            return self.read_in(spec, id_column, ids, conn=conn, columns=columns)
        # Month partitions: the nearest id is sought in the days next to the bound first (a month,
        # then a year: the other months pruned), and only the prefixes with none there further,
        # to the end of the history on the bound's side (each max() / min() then descends every
        # month's index on that side; a batch's meters have no later event, and the months after
        # the bound are few). A row found within some days is the nearest: a nearer one would lie
        # between it and the bound, in those days too.
        ids, missing, day = [], prefixes, days[0]
        for reach in (*NEAREST_FIRST_DAYS, None):
            if reach is None:
                near = (date.min, day) if below else (day, date.max)
            else:
                step = timedelta(days=reach)
                near = (day - step, day) if below else (day, day + step)
            found = self._nearest_ids(conn, spec, id_column, missing, bound, below, inclusive, near)
            ids += [i for i in found.values() if i is not None]
            missing = [value for value, i in found.items() if i is None]
            if not missing:
                break
        return self.read_in(spec, id_column, ids, conn=conn, columns=columns)

    def _nearest_id(
        self,
        spec: TableSpec,
        id_column: str,
        prefixes: Sequence[str],
        bound: str,
        below: bool,
        inclusive: bool,
        days: tuple[date, date] | None,
    ) -> tuple[sa.FromClause, sa.ColumnElement[str], sa.ScalarSelect]:
        """The prefixes' table, its column, and the correlated max() / min() of read_nearest_ids
        (on the alias `x` of the table; among the rows of those partition `days` when given)."""
        p, prefix = self._prefix_rows(prefixes)
        x = self.table(spec).alias("x")
        key, edge = x.c[id_column], prefix.concat(bound)
        if below:
            within = sa.and_(key >= prefix, key <= edge if inclusive else key < edge)
        else:
            within = sa.and_(key <= prefix.concat(ID_END), key >= edge if inclusive else key > edge)
        if days is not None:
            within = sa.and_(within, x.c[spec.partition_by_month].between(*days))
        return p, prefix, sa.select((sa.func.max if below else sa.func.min)(key)).where(within).scalar_subquery()

    def _nearest_ids(
        self,
        conn: Connection,
        spec: TableSpec,
        id_column: str,
        prefixes: Sequence[str],
        bound: str,
        below: bool,
        inclusive: bool,
        days: tuple[date, date] | None = None,
    ) -> dict[str, str | None]:
        """Per prefix, its nearest id (None: none)."""
        p, prefix, nearest = self._nearest_id(spec, id_column, prefixes, bound, below, inclusive, days)
        return {value: found for value, found in conn.execute(sa.select(p.c.value, nearest).select_from(p))}

    def prefixes_with_rows(
        self, conn: Connection, spec: TableSpec, id_column: str, prefixes: Iterable[str]
    ) -> list[str]:
        """Those of `prefixes` under which the table holds an id (one seek each on the key)."""
        driving = self._prefix_rows(prefixes)
        if driving is None:
            return []
        p, prefix = driving
        key = self.table(spec).c[id_column]
        held = sa.select(key).where(key >= prefix, key <= prefix.concat(ID_END)).exists()
        return self.scalars(sa.select(p.c.value).where(held), conn=conn)

    def _prefix_rows(self, prefixes: Iterable[str]) -> tuple[sa.FromClause, sa.ColumnElement[str]] | None:
        """The prefixes as a one-parameter table to drive the key reads, and its column as text
        (None when there are none)."""
        values = sorted(set(prefixes))
        if not values:
            return None
        p = self.text_rows(values, name="prefixes")
        return p, sa.type_coerce(p.c.value, sa.Text)

    def text_rows(self, values: Sequence[str], name: str = "ids") -> sa.FromClause:
        """A one-column table (column `value`) of these strings, to drive a join or a correlated
        subquery per value (an IN list only filters; it cannot be a correlated subquery's outer row).

        Bound as ONE parameter where the database can unpack it (SQLite: json_each of a JSON array;
        PostgreSQL: unnest of a text[]), so the statement compiles once whatever the number of
        values: a VALUES list binds each value apart, and SQLAlchemy then compiles a new statement
        for every chunk, about 0.1 s for 900 values."""
        values = list(values)
        if self.dialect == "sqlite":
            return sa.func.json_each(json.dumps(values)).table_valued("value", name=name)
        if self.dialect == "postgresql":
            array = sa.literal(values, postgresql.ARRAY(sa.Text))
            return sa.func.unnest(array).table_valued("value", name=name).render_derived()
        return sa.values(sa.column("value", sa.Text), name=name).data([(v,) for v in values]).cte(name)

    def scalars(self, query: sa.Select, conn: Connection | None = None) -> list[Any]:
        """The first column of a query's rows."""
        self.check_schema()
        if conn is not None:
            return list(conn.execute(query).scalars().all())
        with self.engine.connect() as own:
            return list(own.execute(query).scalars().all())

    def count(self, spec: TableSpec, where: sa.ColumnElement[bool] | None = None) -> int:
        self.check_schema()
        query = sa.select(sa.func.count()).select_from(self.table(spec))
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # --- writes (inside a transaction) --------------------------------------------------------

    def insert(self, conn: Connection, spec: TableSpec, frame: pl.DataFrame) -> int:
        """Insert the frame's rows (conformed to the declaration) and return how many.

        The bulk paths hand the driver plain tuples (SQLite) or a COPY stream (PostgreSQL): going
        through SQLAlchemy's per-row parameter processing costs several times the write itself.
        """
        if frame.is_empty():
            return 0
        conformed = spec.conform(frame)
        if self.dialect == "sqlite":
            _insert_sqlite(conn, self.table(spec), conformed)
        elif self.dialect == "postgresql" and conn.connection.driver_connection.__class__.__module__.startswith(
            "psycopg"
        ):
            _copy_postgres(conn, self.table(spec), conformed)
        else:
            table = self.table(spec)
            for chunk in chunked(conformed.to_dicts(), 5_000):
                conn.execute(table.insert(), chunk)
        return conformed.height

    def delete(self, conn: Connection, spec: TableSpec, where: sa.ColumnElement[bool]) -> int:
        return conn.execute(sa.delete(self.table(spec)).where(where)).rowcount

    def delete_in(
        self,
        conn: Connection,
        spec: TableSpec,
        column: str,
        values: Iterable[Any],
        where: sa.ColumnElement[bool] | None = None,
    ) -> int:
        col = self.table(spec).c[column]
        deleted = 0
        for chunk in chunked(sorted(set(values)), IN_CHUNK):
            condition = col.in_(chunk) if where is None else sa.and_(col.in_(chunk), where)
            days = self._partition_days_of_ids(spec, column, chunk, conn)
            if days is not None:  # the months of these ids only (PostgreSQL prunes the others)
                condition = sa.and_(condition, self.table(spec).c[spec.partition_by_month].in_(days))
            deleted += self.delete(conn, spec, condition)
        return deleted

    # --- month partitions (PostgreSQL) -----------------------------------------------------------

    def _partition_zone(self, spec: TableSpec, id_column: str, conn: Connection | None) -> str | None:
        """The time zone whose local dates partition `spec`, when `id_column` holds the time they
        come from and the database partitions the table (PostgreSQL, migration 0022): the
        warehouse's recorded zone. None otherwise: no partition condition to add. A warehouse
        without a recorded zone has no rows to find yet (the first write records it)."""
        if self.dialect != "postgresql" or spec.partition_date_in_id != id_column:
            return None
        if self._zone_of_partitions is None:
            table = self.table(EV_WAREHOUSE_SETTINGS)
            query = sa.select(table.c.value).where(table.c.key == "timezone")
            found = self.scalars(query, conn=conn)
            if not found:
                return None
            self._zone_of_partitions = found[0]  # recorded once, never changed (ensure_timezone)
        return self._zone_of_partitions

    def _partition_day_of_id(
        self, spec: TableSpec, id_column: str, value: sa.ColumnElement[str], conn: Connection | None
    ) -> sa.ColumnElement | None:
        """SQL: the partition column's value of the row with id `value` (the local date of the time
        the id ends with), for a join on the id to name its partition; None when not partitioned."""
        zone = self._partition_zone(spec, id_column, conn)
        if zone is None:
            return None
        time = sa.cast(sa.func.substring(value, "[^|]+$"), sa.DateTime(timezone=True))
        return sa.cast(sa.func.timezone(zone, time), sa.Date)

    def _partition_days_of_ids(
        self, spec: TableSpec, id_column: str, ids: Sequence[str], conn: Connection | None
    ) -> list[date] | None:
        """The partition column's values of rows with these ids (as _partition_day_of_id, computed
        here: constants prune when the statement is planned); None when not partitioned."""
        zone = self._partition_zone(spec, id_column, conn)
        if zone is None or not ids:
            return None
        times = pl.Series(list(ids), dtype=pl.String).str.extract(r"([^|]+)$")
        stamps = times.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", strict=False)
        if stamps.null_count():  # an id of another form: no condition (every partition is sought)
            return None
        return stamps.dt.replace_time_zone("UTC").dt.convert_time_zone(zone).dt.date().unique().sort().to_list()

    def _partition_days_between(
        self, spec: TableSpec, id_column: str, low: str, high: str, conn: Connection | None
    ) -> tuple[date, date] | None:
        """The partition column's range for ids from prefix + `low` to prefix + `high` when both are
        times (`id_time`), the local dates of those times; None for other bounds (a whole meter: ""
        to ID_END) or a table not partitioned."""
        days = self._partition_days_of_ids(spec, id_column, [low, high], conn) if low and high != ID_END else None
        return None if days is None else (days[0], days[-1])

    def record_event_commit(self, conn: Connection, batch_id: str, event_count: int, now: datetime) -> int | None:
        """Number this transaction's new events in commit order (ev_event_commits); call it LAST in the
        writing transaction. None when it wrote no event.

        Why last and under its own lock: the stream's cursor must only ever move past commits that are
        visible. A number taken early (a sequence, an id) grows in start order; a transaction that took
        number 5 and commits after 6 would be skipped by a reader that saw 6. Here the number is
        max + 1 under a transaction-level advisory lock held until the commit: the next writer can
        take 7 only once 6 has committed (PostgreSQL releases the lock after the commit is visible).
        SQLite has one writer at a time (BEGIN IMMEDIATE), which gives the same order.
        """
        if event_count == 0:
            return None
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": COMMIT_SEQ_LOCK_KEY})
        commits = self.table(EV_EVENT_COMMITS)
        seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(commits.c.commit_seq), 0) + 1)).scalar_one()
        conn.execute(
            commits.insert().values(commit_seq=seq, batch_id=batch_id, event_count=event_count, committed_at=now)
        )
        return seq

    def get_setting(self, key: str, conn: Connection | None = None) -> str | None:
        t = self.table(EV_WAREHOUSE_SETTINGS).c
        values = self.scalars(sa.select(t.value).where(t.key == key), conn=conn)
        return values[0] if values else None

    def put_setting(self, conn: Connection, key: str, value: str) -> None:
        """Write a warehouse setting inside the caller's transaction."""
        from datetime import UTC, datetime

        self.delete(conn, EV_WAREHOUSE_SETTINGS, self.column(EV_WAREHOUSE_SETTINGS, "key") == key)
        self.insert(
            conn,
            EV_WAREHOUSE_SETTINGS,
            pl.DataFrame({"key": [key], "value": [value], "updated_at": [datetime.now(UTC)]}),
        )

    def row_counts(self) -> dict[str, int]:
        """Rows in every table (exact counts: for people, not for every micro-batch)."""
        return {spec.name: self.count(spec) for spec in ALL_TABLES}

    def column(self, spec: TableSpec, name: str) -> sa.Column:
        return self.table(spec).c[name]

    def dispose(self) -> None:
        self.engine.dispose()


# How SQLAlchemy's SQLite dialect stores DateTime and Date values (as text), so that rows written
# by the bulk path read back through SQLAlchemy exactly like rows it wrote itself.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S%.6f"
_SQLITE_DATE = "%Y-%m-%d"
_SQLITE_DATETIME_READ = "%Y-%m-%d %H:%M:%S%.f"  # the fraction optional: tolerate any writer


def _insert_sqlite(conn: Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    as_stored = frame.with_columns(
        [pl.col(name).dt.strftime(_SQLITE_DATETIME) for name, dtype in frame.schema.items() if dtype == UTC_DATETIME]
        + [pl.col(name).dt.strftime(_SQLITE_DATE) for name, dtype in frame.schema.items() if dtype == pl.Date]
        + [pl.col(name).cast(pl.Int8) for name, dtype in frame.schema.items() if dtype == pl.Boolean]
    )
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    marks = ", ".join("?" for _ in frame.columns)
    statement = f'INSERT INTO "{table.name}" ({columns}) VALUES ({marks})'
    # Python tuples a chunk at a time: all of a month's 15-minute profile at once (660,000 rows)
    # would hold a few hundred MB of them.
    for start in range(0, as_stored.height, 20_000):
        with gc_paused():
            conn.exec_driver_sql(statement, as_stored.slice(start, 20_000).rows())


# The CSV that polars writes for COPY: every non-numeric value quoted, so an unquoted \N is the only
# NULL (PostgreSQL matches the NULL string unquoted only) and an empty string stays an empty string;
# floats in their shortest round-trip form; timestamps with their UTC offset.
_COPY_NULL = "\\N"
_COPY_CSV = {
    "null_value": _COPY_NULL,
    "quote_style": "non_numeric",
    "datetime_format": "%Y-%m-%dT%H:%M:%S%.6f%:z",
    "include_header": False,
}
_COPY_CHUNK_ROWS = 100_000


def _copy_postgres(conn: Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        # COPY runs inside the caller's transaction, on the same connection.
        if any(dtype == pl.Binary for dtype in frame.schema.values()):
            with cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
                for row in frame.iter_rows():
                    copy.write_row(row)
            return
        # Polars writes the rows as CSV in Rust: no Python object per value.
        with cursor.copy(
            f"""COPY "{table.name}" ({columns}) FROM STDIN WITH (FORMAT csv, NULL '{_COPY_NULL}')"""
        ) as copy:
            for start in range(0, frame.height, _COPY_CHUNK_ROWS):
                copy.write(frame.slice(start, _COPY_CHUNK_ROWS).write_csv(**_COPY_CSV).encode())
    finally:
        cursor.close()


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def empty_frame(spec: TableSpec, columns: Sequence[str] | None = None) -> pl.DataFrame:
    if columns is None:
        return pl.DataFrame(schema=spec.polars_schema)
    return pl.DataFrame(schema={c.name: c.dtype for c in spec.columns if c.name in columns})


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector paused while rows become tuples or tuples rows: a batch makes tens
    of thousands of tuples of plain values, none of them in a cycle, and every full collection on
    the way walks all the objects the process holds (about 0.06 s each in a run worker; two of
    them made a 10,000-message batch 20 % slower, BENCHMARKS.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rows_to_frame(spec: TableSpec, rows: Sequence[Any], columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Database rows to a frame with the declared types.

    Timestamps are stored in UTC. SQLite hands them back naive and PostgreSQL as aware values in
    the session's time zone; both become UTC here.
    """
    if not rows:
        return empty_frame(spec, columns)
    selected = [c for c in spec.columns if columns is None or c.name in columns]
    series = []
    for col, values in zip(selected, zip(*rows, strict=True), strict=True):
        if col.dtype in (UTC_DATETIME, pl.Date):
            s = pl.Series(col.name, values)
            if s.dtype == pl.String:  # SQLite's stored text (Warehouse.stored_columns)
                s = (
                    s.str.strptime(pl.Date, _SQLITE_DATE)
                    if col.dtype == pl.Date
                    else (s.str.strptime(pl.Datetime("us"), _SQLITE_DATETIME_READ).dt.replace_time_zone("UTC"))
                )
            elif col.dtype == pl.Date:
                s = s.cast(pl.Date)
            elif s.dtype == pl.Null:
                s = s.cast(UTC_DATETIME)
            elif getattr(s.dtype, "time_zone", None) is None:
                s = s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            else:
                s = s.dt.convert_time_zone("UTC").cast(UTC_DATETIME)
        else:
            s = pl.Series(col.name, values, dtype=col.dtype, strict=False)
        series.append(s)
    return pl.DataFrame(series)
