"""transformer_daily_load: the end-of-day thermal state, so heat carries over midnight

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

The aging of a transformer-day starts from the top-oil and hot-spot rises at the end of its day
before (issue 28). They are kept with the day so a later run (another chunk, another day)
starts from them.

Written out explicitly: a migration is a frozen step, it must not read ev_assets.warehouse.tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_TABLE = "transformer_daily_load"


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch_op:
        batch_op.add_column(
            sa.Column(
                "top_oil_rise_end_k",
                sa.Float(),
                nullable=True,
                comment="Top-oil rise over ambient at the end of the day, K (C57.91 clause 7): the next day's start (heat carries over midnight); null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "hot_spot_rise_end_k",
                sa.Float(),
                nullable=True,
                comment="Hot-spot rise over top oil at the end of the day, K: the next day's start; null when the rating is unknown.",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch_op:
        batch_op.drop_column("hot_spot_rise_end_k")
        batch_op.drop_column("top_oil_rise_end_k")
