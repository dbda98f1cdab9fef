"""ev_charging_sessions: the (meter_id, end_time) index covers end_only sessions only

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

The sessions step reads a window's sessions with a start on (meter_id, start_time) and those
without one (end_only: the start never came) on (meter_id, end_time); nothing else reads by end
time. Over every session, that second index cost each micro-batch a page per meter it touched on a
large history (3,954 of the 28,584 pages a 10,000-message batch dirtied on a 3 M-session history),
for the few end_only sessions it is there for. Partial (`WHERE start_time IS NULL`), it holds only
those, and the reads find the same rows.

Write the operations out explicitly: a migration is a frozen step, it must not read
ev_assets.warehouse.tables (the declarations move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TABLE = "ev_charging_sessions"
_FULL = "ix_ev_charging_sessions_meter_id_end_time"
_PARTIAL = "ix_ev_charging_sessions_end_only_meter_id_end_time"
_END_ONLY = "start_time IS NULL"


def upgrade() -> None:
    op.create_index(
        _PARTIAL, _TABLE, ["meter_id", "end_time"], sqlite_where=sa.text(_END_ONLY), postgresql_where=sa.text(_END_ONLY)
    )
    op.drop_index(_FULL, table_name=_TABLE)


def downgrade() -> None:
    op.create_index(_FULL, _TABLE, ["meter_id", "end_time"])
    op.drop_index(_PARTIAL, table_name=_TABLE)
