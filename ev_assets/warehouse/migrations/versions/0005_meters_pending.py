"""ev_meters_pending: meters whose events a reference load must attribute again

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Meters whose chain (meter, service point, transformer, feeder) a reference load changed, or that
had events waiting for their meter: the events step attributes their events again, the sessions
step re-pairs them. Starts empty: the next reference load fills it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ev_meters_pending",
        sa.Column("meter_id", sa.Text(), nullable=False, primary_key=True, comment="MeterID."),
        sa.Column("stage", sa.Text(), nullable=False, comment="attribute or pair."),
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), nullable=False, comment="When the reference load queued it."
        ),
        comment=(
            "Meters whose events must be attributed again after a reference load changed their chain "
            "(meter, service point, transformer, feeder; corrections may be dated in the past), or that "
            "had events waiting for their meter. stage attribute: the events step re-enriches every event "
            "of the meter; stage pair: the sessions step re-pairs its sessions and queues the changed days."
        ),
    )
    op.create_index("ix_ev_meters_pending_stage_meter_id", "ev_meters_pending", ["stage", "meter_id"])


def downgrade() -> None:
    op.drop_index("ix_ev_meters_pending_stage_meter_id", table_name="ev_meters_pending")
    op.drop_table("ev_meters_pending")
