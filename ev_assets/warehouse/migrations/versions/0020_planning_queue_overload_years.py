"""transformer_planning_queue.years_to_likely_overload (issue 28 item 6): the overload forecast's
first likely year enters the planning queue's risk score. The queue is a snapshot: its next refresh
fills the column.

Revision ID: 0020
Revises: 0016
Create Date: 2026-12-07

Written out explicitly: a migration is a frozen step, it must not read ev_assets.warehouse.tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0016"
branch_labels = None
depends_on = None

TABLE = "transformer_planning_queue"
DESCRIPTION = "Transformers ranked for planning by a risk score over a rolling window of EV_PLANNING_WINDOW_DAYS local days (default 90) ending on window_last_day, the latest load_date of transformer_daily_load: a snapshot refreshed daily. risk_score = EV_RISK_WEIGHT_UTILIZATION x peak_utilization + EV_RISK_WEIGHT_HOURS_OVER_RATING x hours_over_rating / window days + EV_RISK_WEIGHT_LOSS_OF_LIFE x loss_of_life_h / (24 x window days) + EV_RISK_WEIGHT_EV_GROWTH x ev_count_growth + EV_RISK_WEIGHT_OVERLOAD_SOON / years_to_likely_overload (a null term counts 0). One row per transformer with a daily row in the window."
PREVIOUS_DESCRIPTION = "Transformers ranked for planning by a risk score over a rolling window of EV_PLANNING_WINDOW_DAYS local days (default 90) ending on window_last_day, the latest load_date of transformer_daily_load: a snapshot refreshed daily. risk_score = EV_RISK_WEIGHT_UTILIZATION x peak_utilization + EV_RISK_WEIGHT_HOURS_OVER_RATING x hours_over_rating / window days + EV_RISK_WEIGHT_LOSS_OF_LIFE x loss_of_life_h / (24 x window days) + EV_RISK_WEIGHT_EV_GROWTH x ev_count_growth (a null term counts 0). One row per transformer with a daily row in the window."


def upgrade() -> None:
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "years_to_likely_overload",
                sa.BigInteger(),
                nullable=True,
                comment="transformer_overload_forecast (base scenario): first_year_p50 minus the year of window_last_day, at least 1; null when the forecast sees no likely overload in its horizon or has not run.",
            )
        )
        batch_op.create_table_comment(DESCRIPTION, existing_comment=PREVIOUS_DESCRIPTION)


def downgrade() -> None:
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.drop_column("years_to_likely_overload")
        batch_op.create_table_comment(PREVIOUS_DESCRIPTION, existing_comment=DESCRIPTION)
