"""ev_warehouse_settings: key/value settings of the warehouse (the time zone its days were computed in)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ev_warehouse_settings",
        sa.Column("key", sa.Text(), nullable=False, primary_key=True, comment="Setting name, e.g. timezone."),
        sa.Column("value", sa.Text(), nullable=False, comment="Setting value, e.g. America/New_York."),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When the value was recorded."),
        comment=(
            "Facts about the warehouse itself, one row per key. timezone: the EV_TIMEZONE its local "
            "days (event dates, daily partitions) were computed in; the pipeline refuses to run with another."
        ),
    )


def downgrade() -> None:
    op.drop_table("ev_warehouse_settings")
