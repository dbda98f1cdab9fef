"""ev_charging_events.message_id, ev_charging_sessions.session_id and .updated_at: say what they are

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

Both comments said "hash of meter, ...", but the ids have always been readable text
(meter|type|time and meter|start time): a consumer reading the catalog could not know it can parse
them, or that a meter's ids sort together. And a session's updated_at now moves only when the
session changes (the sessions step no longer rewrites the sessions of its window that re-pair the
same). Only the comments change; SQLite keeps no comments.

Write the operations out explicitly: a migration is a frozen step, it must not read
ev_assets.warehouse.tables (the declarations move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COMMENTS = (
    (
        "ev_charging_events",
        "message_id",
        "Deterministic id of the message: hash of meter, type and message time.",
        "Deterministic id of the message, readable and the same on every channel and replay: "
        "meter_id|message_type|message_time (UTC, ISO 8601 with six fractional digits, truncated to the "
        "millisecond), e.g. `M1|start|2024-06-03T18:00:00.000000Z`.",
    ),
    (
        "ev_charging_sessions",
        "session_id",
        "Deterministic id: hash of meter and start time (end time for end_only).",
        "Deterministic id, readable and the same on every replay: meter_id|start_time (UTC, ISO 8601 with six "
        "fractional digits), or meter_id|end|end_time for end_only, e.g. `M1|2024-06-03T18:00:00.000000Z`.",
    ),
    (
        "ev_charging_sessions",
        "updated_at",
        "When the pipeline last wrote this session.",
        "When the session last changed: a re-pairing that finds a stored session the same (this column aside) "
        "leaves it as it is.",
    ),
)


def _set_comments(upgrading: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":  # keeps no column comments
        return
    for table, column, old, new in _COMMENTS:
        comment, existing = (new, old) if upgrading else (old, new)
        kind = sa.DateTime(timezone=True) if column == "updated_at" else sa.Text()
        op.alter_column(
            table, column, comment=comment, existing_comment=existing, existing_type=kind, existing_nullable=False
        )


def upgrade() -> None:
    _set_comments(upgrading=True)


def downgrade() -> None:
    _set_comments(upgrading=False)
