"""ev_charging_events: a meter's events by type and time are read on the primary key

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05

message_id is `meter|type|time` (ISO 8601, UTC, to the millisecond), so a meter's events of one
type by time are a range of the primary key, and its events nearest a time a seek on it. The
(meter_id, message_time) index duplicated that, and cost every micro-batch a page per meter it
touched on a large history (6,045 of the 24,790 pages a 10,000-message batch dirtied on a
3 M-session history): it goes. As for session_id (0012), PostgreSQL keeps the ids in code-point
order (COLLATE "C"), which rebuilds the primary key's index once.

Write the operations out explicitly: a migration is a frozen step, it must not read
ev_assets.warehouse.tables (the declarations move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TABLE = "ev_charging_events"
_INDEX = "ix_ev_charging_events_meter_id_message_time"


def _collate(collation: str | None) -> None:
    if op.get_bind().dialect.name != "postgresql":  # SQLite compares text by code point already
        return
    op.alter_column(
        _TABLE, "message_id", type_=sa.Text(collation=collation), existing_type=sa.Text(), existing_nullable=False
    )


def upgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
    _collate("C")


def downgrade() -> None:
    _collate(None)
    op.create_index(_INDEX, _TABLE, ["meter_id", "message_time"])
