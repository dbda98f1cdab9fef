"""ev_charging_sessions: a meter's sessions by start time are read on the primary key

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

session_id is `meter|start time` (ISO 8601, UTC, microseconds), so a meter's sessions by start
time are a range of the primary key. The (meter_id, start_time) index duplicated it, and cost
every micro-batch a page per meter it touched on a large history (3,954 of the 24,790 pages a
10,000-message batch dirtied on a 3 M-session history): it goes. The ranges need ids that sort by
code point: SQLite's default; in PostgreSQL the column takes COLLATE "C" (a database created with
another collation, en_US.UTF-8 say, would otherwise sort '|' and the digits differently), which
rebuilds the primary key's index once.

Write the operations out explicitly: a migration is a frozen step, it must not read
ev_assets.warehouse.tables (the declarations move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_TABLE = "ev_charging_sessions"
_INDEX = "ix_ev_charging_sessions_meter_id_start_time"


def _collate(collation: str | None) -> None:
    if op.get_bind().dialect.name != "postgresql":  # SQLite compares text by code point already
        return
    op.alter_column(
        _TABLE, "session_id", type_=sa.Text(collation=collation), existing_type=sa.Text(), existing_nullable=False
    )


def upgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
    _collate("C")


def downgrade() -> None:
    _collate(None)
    op.create_index(_INDEX, _TABLE, ["meter_id", "start_time"])
