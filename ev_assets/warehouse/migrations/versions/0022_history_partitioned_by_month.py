"""PostgreSQL: the history tables partitioned by month (issue 29 item 3)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08

ev_charging_events (by message_date), ev_charging_sessions (by event_date) and the daily and
15-minute load tables of transformers, feeders and substations (by load_date) become declarative
RANGE partitions, one a month (`<table>_pYYYY_MM`, [first day, first day of the next month)) plus a
DEFAULT partition (`<table>_default`) that takes a row of a month without its partition. A month is
then vacuumed, archived (detached) and dropped as a whole (`ev-awareness db detach-month`).

An existing warehouse is converted table by table, in the upgrade's one transaction: a partitioned
copy is created (same columns, types, collations, comments), with a partition for every month from
the table's first row to its last, every row is copied into it, the old table is dropped and the
copy takes its name, then the primary key and the indexes are built again, once, over the loaded
rows (building them before would cost an index insert per row). The months ahead are made by
`ensure_month_partitions` (`ev-awareness db upgrade`, `init` and a daily schedule), not here.

Identity: PostgreSQL requires the partition column in every unique key of a partitioned table, so a
key that lacks it (message_id, session_id, and (id, interval_start) of the 15-minute tables) gets
it appended. The column is a function of the key (the date, in the warehouse's recorded time zone,
of the time the id holds; interval_start's local date), so (key, date) is unique exactly when the
key is: no two rows can share a key with different dates. The pipeline deduplicates on the key
before it writes, as before. The daily tables' keys hold load_date already.

SQLite keeps plain tables: nothing happens there. Written out explicitly: a migration is a frozen
step, it must not read ev_assets.warehouse.tables.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# table -> (partition column, the primary key as it was)
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ev_charging_events": ("message_date", ("message_id",)),
    "ev_charging_sessions": ("event_date", ("session_id",)),
    "transformer_daily_load": ("load_date", ("transformer_id", "load_date")),
    "feeder_daily_load": ("load_date", ("feeder_id", "load_date")),
    "substation_daily_load": ("load_date", ("substation_id", "load_date")),
    "transformer_interval_load": ("load_date", ("transformer_id", "interval_start")),
    "feeder_interval_load": ("load_date", ("feeder_id", "interval_start")),
    "substation_interval_load": ("load_date", ("substation_id", "interval_start")),
}


def _month_after(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def _keyed(key: tuple[str, ...], column: str) -> tuple[str, ...]:
    return key if column in key else (*key, column)


def _quoted(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _rebuild(table: str, column: str, key: tuple[str, ...], *, partitioned: bool) -> None:
    """Copy `table` into a new one (partitioned by month of `column`, or plain), swap the names, and
    build its primary key (`key`) and its former indexes again."""
    conn = op.get_bind()
    indexes = conn.execute(
        sa.text(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
            "AND i.tablename = :t AND i.indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype = 'p')"
        ),
        {"t": table},
    ).all()
    pkey = conn.execute(
        sa.text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype = 'p'"),
        {"t": table},
    ).scalar_one()
    comment = conn.execute(sa.text("SELECT obj_description(CAST(:t AS regclass), 'pg_class')"), {"t": table}).scalar()
    copy, low = f"{table}__rebuilt", None
    like = f'(LIKE "{table}" INCLUDING DEFAULTS INCLUDING COMMENTS INCLUDING STATISTICS)'
    if partitioned:
        op.execute(f'CREATE TABLE "{copy}" {like} PARTITION BY RANGE ("{column}")')
        low, high = conn.execute(sa.text(f'SELECT min("{column}"), max("{column}") FROM "{table}"')).one()
        month = None if low is None else low.replace(day=1)
        while month is not None and month <= high:
            following = _month_after(month)
            op.execute(
                f'CREATE TABLE "{table}_p{month:%Y_%m}" PARTITION OF "{copy}" '
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{following.isoformat()}')"
            )
            month = following
        op.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{copy}" DEFAULT')
    else:
        op.execute(f'CREATE TABLE "{copy}" {like}')
    op.execute(f'INSERT INTO "{copy}" SELECT * FROM "{table}"')
    # CASCADE: the partitions of a partitioned table (downgrade); nothing else depends on these tables.
    op.execute(f'DROP TABLE "{table}" CASCADE')
    op.execute(f'ALTER TABLE "{copy}" RENAME TO "{table}"')
    op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{pkey}" PRIMARY KEY ({_quoted(key)})')
    for _name, definition in indexes:
        # pg_indexes gives `CREATE INDEX ix ON [ONLY] public.<table> USING ...`: ONLY (an index of a
        # partitioned table's own) would leave the partitions without it.
        op.execute(definition.replace(" ON ONLY ", " ON "))
    if comment is not None:
        # Through the driver, unparsed: descriptions hold colons and percent signs.
        conn.exec_driver_sql(f'COMMENT ON TABLE "{table}" IS {_comment_literal(comment)}')
    if low is not None or not partitioned:
        # The planner's statistics of the new table (an empty one is left to autovacuum: statistics
        # of no rows would steer the plans of its first batches).
        op.execute(f'ANALYZE "{table}"')


def _comment_literal(comment: str) -> str:
    return "'" + comment.replace("'", "''") + "'"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":  # SQLite keeps plain tables
        return
    for table, (column, key) in TABLES.items():
        _rebuild(table, column, _keyed(key, column), partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, (column, key) in TABLES.items():
        _rebuild(table, column, key, partitioned=False)
