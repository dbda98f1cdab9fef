"""transformer aging and planning queue (issue 12 items 3 and 4)

Four nullable columns of transformer_daily_load (IEEE C57.91 hot spot, aging factors and loss of
life per transformer-day), null on existing rows until their days are recomputed (`ev-awareness`
backfill / the daily-load step); the transformer_planning_queue snapshot table, filled by its next
refresh; ref_transformers gains the optional aging overrides base_load_scale and ambient_c
(null: the settings).

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
    with op.batch_alter_table("ref_transformers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "base_load_scale",
                sa.Float(),
                nullable=True,
                comment="This transformer's scale of the non-EV base load profile in its aging (transformer_daily_load.hot_spot_max_c...); null: EV_BASE_LOAD_SCALE.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "ambient_c",
                sa.Float(),
                nullable=True,
                comment="This transformer's ambient temperature in its aging, °C; null: EV_AMBIENT_C.",
            )
        )

    op.create_table(
        "transformer_planning_queue",
        sa.Column("transformer_id", sa.Text(), nullable=False, comment="Transformer identifier."),
        sa.Column(
            "rank",
            sa.BigInteger(),
            nullable=False,
            comment="1 = the highest risk_score; ties: the smaller transformer_id.",
        ),
        sa.Column("risk_score", sa.Float(), nullable=False, comment="The weighted score above."),
        sa.Column(
            "feeder_id", sa.Text(), nullable=True, comment="Feeder of the transformer on its latest day in the window."
        ),
        sa.Column(
            "kva_rating",
            sa.Float(),
            nullable=True,
            comment="Rating on its latest rated day in the window, kVA; null when unknown.",
        ),
        sa.Column("window_first_day", sa.Date(), nullable=False, comment="First local day of the window."),
        sa.Column("window_last_day", sa.Date(), nullable=False, comment="Last local day of the window (inclusive)."),
        sa.Column(
            "days_with_load",
            sa.BigInteger(),
            nullable=False,
            comment="Days of the window with a transformer_daily_load row (EV load).",
        ),
        sa.Column(
            "peak_utilization",
            sa.Float(),
            nullable=True,
            comment="Largest daily utilization (peak EV kVA / kva_rating) in the window; null when the rating is unknown.",
        ),
        sa.Column(
            "hours_over_rating",
            sa.Float(),
            nullable=True,
            comment="Sum of minutes_above_rating / 60 over the window; null when the rating is unknown.",
        ),
        sa.Column(
            "loss_of_life_h",
            sa.Float(),
            nullable=True,
            comment="Sum of the daily loss_of_life_h (IEEE C57.91 aging) over the window, hours; null when the rating is unknown.",
        ),
        sa.Column(
            "ev_count_first_half",
            sa.BigInteger(),
            nullable=False,
            comment="Largest daily ev_count in the earlier part of the window (all but its last EV_PLANNING_WINDOW_DAYS // 2 days); 0 without load there.",
        ),
        sa.Column(
            "ev_count_second_half",
            sa.BigInteger(),
            nullable=False,
            comment="Largest daily ev_count in the last EV_PLANNING_WINDOW_DAYS // 2 days of the window; 0 without load there.",
        ),
        sa.Column(
            "ev_count_growth",
            sa.BigInteger(),
            nullable=False,
            comment="ev_count_second_half - ev_count_first_half (negative when EVs left).",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When the snapshot was computed."),
        sa.PrimaryKeyConstraint("transformer_id"),
        comment="Transformers ranked for planning by a risk score over a rolling window of EV_PLANNING_WINDOW_DAYS local days (default 90) ending on window_last_day, the latest load_date of transformer_daily_load: a snapshot refreshed daily. risk_score = EV_RISK_WEIGHT_UTILIZATION x peak_utilization + EV_RISK_WEIGHT_HOURS_OVER_RATING x hours_over_rating / window days + EV_RISK_WEIGHT_LOSS_OF_LIFE x loss_of_life_h / (24 x window days) + EV_RISK_WEIGHT_EV_GROWTH x ev_count_growth (a null term counts 0). One row per transformer with a daily row in the window.",
    )
    with op.batch_alter_table("transformer_planning_queue", schema=None) as batch_op:
        batch_op.create_index("ix_transformer_planning_queue_rank", ["rank"], unique=False)

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
    with op.batch_alter_table("ref_transformers", schema=None) as batch_op:
        batch_op.drop_column("ambient_c")
        batch_op.drop_column("base_load_scale")

    with op.batch_alter_table("transformer_daily_load", schema=None) as batch_op:
        batch_op.drop_column("loss_of_life_h")
        batch_op.drop_column("equivalent_aging")
        batch_op.drop_column("aging_factor_max")
        batch_op.drop_column("hot_spot_max_c")

    with op.batch_alter_table("transformer_planning_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_transformer_planning_queue_rank")

    op.drop_table("transformer_planning_queue")
