"""first channel of arrival (issue 11: stream, export or folder per event; the export gap check)

Existing events get first_channel = 'folder' (before the receiver and the export client, every
file was put in the landing folder). The index on received_time serves the gap check, which counts
a received day's (UTC) events by first_channel.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 14:11:46.013338

Write the operations out explicitly (op.add_column, op.create_table, ...): a migration is a frozen
step, it must not read ev_assets.warehouse.tables (the declarations move on). SQLite runs in batch
mode: wrap ALTERs in `with op.batch_alter_table("name") as batch:`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ev_charging_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "first_channel",
                sa.Text(),
                nullable=False,
                server_default=sa.text("'folder'"),
                comment="Channel the message first arrived by, from its landing file's name: stream (the receiver's `stream-*` files), export (a batch export's `export-*` files) or folder (any other file). A later delivery by another channel is a duplicate and does not change it. Events stored before this column: folder.",
            )
        )
        batch_op.create_index("ix_ev_charging_events_received_time", ["received_time"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ev_charging_events", schema=None) as batch_op:
        batch_op.drop_index("ix_ev_charging_events_received_time")
        batch_op.drop_column("first_channel")
