"""Schema migrations of the warehouse (Alembic), as plain functions: the CLI (`ev-awareness db
upgrade|current|history`) and the tests call these; nothing here knows about Dagster.

The migrations live in `ev_assets/warehouse/migrations/` (shipped inside the package); Alembic is
configured here in code, no alembic.ini. The runtime never creates or alters a table: it checks
that the database is at `head()` and otherwise refuses (`Warehouse.check_schema`).

A warehouse created before migrations existed (the tables of revision 0001, no `alembic_version`
table) is adopted: `upgrade` stamps it at 0001, then upgrades it as usual.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:  # alembic takes ~1 s to import: only the functions that change the schema do
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
INITIAL_REVISION = "0001"
VERSION_TABLE = "alembic_version"
# Any constant: two processes upgrading one PostgreSQL database at once take turns.
_PG_LOCK_KEY = 0x65765F6D6967  # "ev_mig"


class SchemaError(RuntimeError):
    """The database's schema is not the one this code works with."""


class SchemaBehindError(SchemaError):
    """The database is behind the code (or has no schema at all): run `ev-awareness db upgrade`."""


class SchemaAheadError(SchemaError):
    """The database was migrated by a newer version of the code than this one."""


class AdoptionError(SchemaError):
    """The database holds some tables but not a warehouse this code can adopt."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, in code: the package's migrations folder, and the connection to
    run on (env.py takes it from `attributes`, so URLs with passwords never go through ini files)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def target_metadata() -> sa.MetaData:
    """The declarations (ev_assets.warehouse.tables), for autogenerate to compare with."""
    from ev_assets.warehouse.tables import ALL_TABLES

    metadata = sa.MetaData()
    for spec in ALL_TABLES:
        spec.sqlalchemy_table(metadata)
    return metadata


def is_month_partition(name: str) -> bool:
    """Whether a table name is one of a partitioned table's months, its DEFAULT, or a detached month
    (ev_assets.warehouse.month_partitions): part of a declared table, not a table of its own."""
    import re

    from ev_assets.warehouse.tables import PARTITIONED_TABLES

    return any(
        re.fullmatch(rf"{spec.name}_(p\d{{4}}_\d{{2}}(_detached)?|default)", name) for spec in PARTITIONED_TABLES
    )


def include_name(name: str | None, type_: str, _parent_names: dict) -> bool:
    """Autogenerate's filter: the month partitions are not tables to declare (or to drop)."""
    return not (type_ == "table" and name is not None and is_month_partition(name))


def display_url(url: str | sa.URL) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _engine(url: str) -> Engine:
    from ev_assets.warehouse.store import make_engine  # store imports this module

    return make_engine(url)


# --- what the code has ----------------------------------------------------------------------------


@cache
def _revision_graph() -> dict[str, str | None]:
    """revision -> down_revision of every file in versions/, read without importing alembic (the
    runtime's check must not cost a second per process); a test holds it to alembic's reading."""
    graph: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        values = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("revision", "down_revision"):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
        if "revision" in values:
            graph[values["revision"]] = values.get("down_revision")
    return graph


def head() -> str:
    """The revision the code needs."""
    graph = _revision_graph()
    heads = sorted(set(graph) - set(graph.values()))
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads {heads}: merge them (one line of history)")
    return heads[0]


def history() -> list[str]:
    """Every revision as "<id> <message>", newest first."""
    return [f"{rev.revision} {(rev.doc or '').strip()}" for rev in _script().walk_revisions()]


def initial_tables() -> tuple[str, ...]:
    """The tables of revision 0001: those of a warehouse made before migrations existed."""
    return tuple(_script().get_revision(INITIAL_REVISION).module.TABLES)


def known_revisions() -> set[str]:
    return set(_revision_graph())


# --- what the database has ------------------------------------------------------------------------


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, None when it has none (read with SQL, as alembic
    stores it: one row in alembic_version)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise SchemaError(f"{VERSION_TABLE} holds several revisions {rows}: the migrations branched")
    return rows[0] if rows else None


def current(url: str) -> str | None:
    """The database's schema revision (None: no schema, or tables from before migrations)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    finally:
        engine.dispose()


def schema_status(url: str) -> tuple[str | None, str]:
    """(the database's revision, the code's head)."""
    return current(url), head()


def check_connection(conn: Connection, url: str | sa.URL) -> None:
    """Raise unless the database is at head: the runtime's check, on a connection it has."""
    needed = head()
    found = current_revision(conn)
    if found == needed:
        return
    where = f"the warehouse at {display_url(url)}"
    if found is None:
        legacy = sa.inspect(conn).has_table("ev_charging_events")
        state = "has tables from before schema migrations (no schema revision)" if legacy else "has no schema"
        raise SchemaBehindError(f"{where} {state}, the code needs {needed}: run `ev-awareness db upgrade`")
    if found not in known_revisions():
        raise SchemaAheadError(
            f"{where} is at schema revision {found}, which this code does not know (a newer version "
            f"migrated it; the code needs {needed}): run the newer version of the code"
        )
    raise SchemaBehindError(
        f"{where} is at schema revision {found}, the code needs {needed}: run `ev-awareness db upgrade`"
    )


# --- changing the database ------------------------------------------------------------------------


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database to `revision` (default: head) in one transaction, adopting a
    pre-migration warehouse first. Idempotent: at the target already, nothing happens.
    Returns (revision before, revision after)."""
    from alembic import command

    from ev_assets.warehouse.store import WRITE_LOCK_OPTION

    engine = _engine(url)
    try:
        # A writer from the start (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock): two
        # upgrades at once take turns instead of deadlocking on their first write.
        with engine.connect().execution_options(**{WRITE_LOCK_OPTION: True}) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            before = current_revision(conn)
            config = alembic_config(conn)
            if before is None and _adopt(conn, url):
                command.stamp(config, INITIAL_REVISION)
            command.upgrade(config, revision)
            after = current_revision(conn)
        return before, after
    finally:
        engine.dispose()


def stamp(url: str, revision: str) -> None:
    """Record `revision` without running anything (for repairs by hand)."""
    from alembic import command

    engine = _engine(url)
    try:
        with engine.begin() as conn:
            command.stamp(alembic_config(conn), revision)
    finally:
        engine.dispose()


def _adopt(conn: Connection, url: str) -> bool:
    """Whether a database without a revision holds the warehouse of 0001 (then it is stamped):
    False for an empty database, an error for one with some of the tables but not all."""
    initial = initial_tables()
    present = set(sa.inspect(conn).get_table_names())
    found = [t for t in initial if t in present]
    if not found:
        return False
    missing = [t for t in initial if t not in present]
    if missing:
        raise AdoptionError(
            f"the warehouse at {display_url(url)} has no schema revision and only some of the initial "
            f"tables (missing {missing}): it was not made by this pipeline, or only in part; "
            "use an empty database, or create the missing tables and run `ev-awareness db upgrade` again"
        )
    return True


def revision(message: str, *, url: str, autogenerate: bool = True) -> None:
    """For developers: write the next migration file into migrations/versions, diffing the
    declarations with the database at `url` (which must be at head). Review and edit what it writes."""
    from alembic import command

    engine = _engine(url)
    try:
        with engine.begin() as conn:
            command.revision(
                alembic_config(conn), message=message, autogenerate=autogenerate, rev_id=f"{int(head()) + 1:04d}"
            )
    finally:
        engine.dispose()
