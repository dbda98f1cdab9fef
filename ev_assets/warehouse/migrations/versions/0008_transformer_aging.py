"""transformer aging (issue 12 item 3: IEEE C57.91 hot spot, aging factors and loss of life per transformer-day)

Four nullable columns of transformer_daily_load, null on existing rows until their days are
recomputed (`ev-awareness` backfill / the daily-load step).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 14:55:00

Write the operations out explicitly (op.add_column, op.create_table, ...): a migration is a frozen
step, it must not read ev_assets.warehouse.tables (the declarations move on). SQLite runs in batch
mode: wrap ALTERs in `with op.batch_alter_table("name") as batch:`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transformer_daily_load", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "hot_spot_max_c",
                sa.Float(),
                nullable=True,
                comment="Highest winding hot-spot temperature of the day, °C (IEEE C57.91 clause 7, exponential method): the 15-minute load in per-unit of kva_rating, EV kVA plus the base load EV_BASE_LOAD_PU_PROFILE x EV_BASE_LOAD_SCALE, at ambient EV_AMBIENT_C; null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "aging_factor_max",
                sa.Float(),
                nullable=True,
                comment="Largest aging acceleration factor F_AA of the day's intervals (C57.91 clause 5, eq. 2: 1 at a 110 °C hot spot); null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "equivalent_aging",
                sa.Float(),
                nullable=True,
                comment="Equivalent aging factor F_EQA of the day (C57.91 clause 5, eq. 3: the time-weighted mean of F_AA); null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "loss_of_life_h",
                sa.Float(),
                nullable=True,
                comment="Insulation life used on the day, hours at the 110 °C reference rate: equivalent_aging x the day's length in hours (24; 23 or 25 on DST change days); null when the rating is unknown.",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("transformer_daily_load", schema=None) as batch_op:
        batch_op.drop_column("loss_of_life_h")
        batch_op.drop_column("equivalent_aging")
        batch_op.drop_column("aging_factor_max")
        batch_op.drop_column("hot_spot_max_c")
