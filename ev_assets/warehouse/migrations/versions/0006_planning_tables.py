"""planning tables: 15-minute profiles, overload exposure, premise EV profile, new EVs (issue 12)

New tables: transformer/feeder/substation_interval_load (filled by the daily-load step, so days
computed before this revision have no profile until recomputed: `daily_load_job` over them),
premise_ev_profile and new_evs (snapshots, filled by the next premise_ev_profile refresh).
transformer_daily_load gains the overload exposure columns, nullable: existing rows get null
(unknown) until their day is recomputed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 14:12:11.481414

Write the operations out explicitly (op.add_column, op.create_table, ...): a migration is a frozen
step, it must not read ev_assets.warehouse.tables (the declarations move on). SQLite runs in batch
mode: wrap ALTERs in `with op.batch_alter_table("name") as batch:`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feeder_interval_load",
        sa.Column("feeder_id", sa.Text(), nullable=False, comment="Feeder identifier."),
        sa.Column(
            "interval_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval (UTC).",
        ),
        sa.Column(
            "load_date",
            sa.Date(),
            nullable=False,
            comment="Local date (EV_TIMEZONE) of interval_start: the daily partition.",
        ),
        sa.Column(
            "kw",
            sa.Float(),
            nullable=False,
            comment="Average EV power of trusted sessions in the interval, kW (partial intervals weighted by overlap).",
        ),
        sa.Column("kva", sa.Float(), nullable=False, comment="kw / EV_POWER_FACTOR."),
        sa.Column(
            "ev_count", sa.BigInteger(), nullable=False, comment="Distinct meters (EVs) charging in the interval."
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When this row was computed."),
        sa.PrimaryKeyConstraint("feeder_id", "interval_start"),
        comment="15-minute EV load profile per feeder: one row per feeder and 15-minute interval with trusted EV load (intervals without load have no row). Computed in the same step and transaction as feeder_daily_load, from the same sums: the day's largest kw is its peak_kw. Partitioned by load_date like the daily load.",
    )
    with op.batch_alter_table("feeder_interval_load", schema=None) as batch_op:
        batch_op.create_index("ix_feeder_interval_load_load_date", ["load_date"], unique=False)

    op.create_table(
        "new_evs",
        sa.Column("premise_id", sa.Text(), nullable=False, comment="Premise identifier."),
        sa.Column(
            "first_charging_day", sa.Date(), nullable=False, comment="Local event date of the premise's first session."
        ),
        sa.Column("transformer_id", sa.Text(), nullable=True, comment="Transformer of the premise's latest session."),
        sa.Column("feeder_id", sa.Text(), nullable=True, comment="Feeder of the premise's latest session."),
        sa.Column(
            "charger_level",
            sa.Text(),
            nullable=True,
            comment="level_1, level_2 or dc (premise_ev_profile.charger_level).",
        ),
        sa.Column("session_count", sa.BigInteger(), nullable=False, comment="Sessions so far."),
        sa.Column(
            "as_of_date",
            sa.Date(),
            nullable=False,
            comment="The day the window ends on (inclusive): first_charging_day > as_of_date - EV_NEW_EV_DAYS.",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When the snapshot was computed."),
        sa.PrimaryKeyConstraint("premise_id"),
        comment="Premises first seen charging in the last EV_NEW_EV_DAYS days (default 30) before as_of_date, the latest local day with a trusted session (today in live operation; the data's last day for an imported history). Refreshed with premise_ev_profile, in the same transaction.",
    )
    op.create_table(
        "premise_ev_profile",
        sa.Column("premise_id", sa.Text(), nullable=False, comment="Premise identifier."),
        sa.Column("transformer_id", sa.Text(), nullable=True, comment="Transformer of the premise's latest session."),
        sa.Column("feeder_id", sa.Text(), nullable=True, comment="Feeder of the premise's latest session."),
        sa.Column(
            "meter_count", sa.BigInteger(), nullable=False, comment="Distinct meters that charged at the premise."
        ),
        sa.Column("first_charging_day", sa.Date(), nullable=False, comment="Local event date of the first session."),
        sa.Column("last_charging_day", sa.Date(), nullable=False, comment="Local event date of the latest session."),
        sa.Column(
            "active_weeks",
            sa.Float(),
            nullable=False,
            comment="Active span in weeks: (last_charging_day - first_charging_day + 1 day) / 7, at least 1 (a premise seen on one day is not extrapolated to 7 sessions a week).",
        ),
        sa.Column("session_count", sa.BigInteger(), nullable=False, comment="Sessions."),
        sa.Column("sessions_per_week", sa.Float(), nullable=False, comment="session_count / active_weeks."),
        sa.Column("energy_kwh", sa.Float(), nullable=False, comment="Energy of the sessions, kWh."),
        sa.Column("median_charge_w", sa.Float(), nullable=True, comment="Median ChargeW of the sessions, W."),
        sa.Column(
            "charger_level",
            sa.Text(),
            nullable=True,
            comment="Inferred from median_charge_w: level_1 (< 2.0 kW), level_2 (2.0 to 19.2 kW), dc (above 19.2 kW); null without ChargeW.",
        ),
        sa.Column(
            "typical_start_hour",
            sa.BigInteger(),
            nullable=False,
            comment="Most frequent local start hour (0-23; ties: the earliest).",
        ),
        sa.Column(
            "on_peak_energy_share",
            sa.Float(),
            nullable=True,
            comment="Share of energy_kwh delivered in the on-peak windows (EV_TOU_ON_PEAK, default weekdays 16:00-21:00 local), from the 15-minute load shape (EV_LOAD_SHAPE); null when energy_kwh is 0.",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When the snapshot was computed."),
        sa.PrimaryKeyConstraint("premise_id"),
        comment="EV adoption by premise, a snapshot refreshed daily: one row per premise with trusted complete charging sessions (no quality flags), over its whole history. What an EV program uses to target customers.",
    )
    with op.batch_alter_table("premise_ev_profile", schema=None) as batch_op:
        batch_op.create_index("ix_premise_ev_profile_first_charging_day", ["first_charging_day"], unique=False)
        batch_op.create_index("ix_premise_ev_profile_transformer_id", ["transformer_id"], unique=False)

    op.create_table(
        "substation_interval_load",
        sa.Column("substation_id", sa.Text(), nullable=False, comment="Substation identifier."),
        sa.Column(
            "interval_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval (UTC).",
        ),
        sa.Column(
            "load_date",
            sa.Date(),
            nullable=False,
            comment="Local date (EV_TIMEZONE) of interval_start: the daily partition.",
        ),
        sa.Column(
            "kw",
            sa.Float(),
            nullable=False,
            comment="Average EV power of trusted sessions in the interval, kW (partial intervals weighted by overlap).",
        ),
        sa.Column("kva", sa.Float(), nullable=False, comment="kw / EV_POWER_FACTOR."),
        sa.Column(
            "ev_count", sa.BigInteger(), nullable=False, comment="Distinct meters (EVs) charging in the interval."
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When this row was computed."),
        sa.PrimaryKeyConstraint("substation_id", "interval_start"),
        comment="15-minute EV load profile per substation: one row per substation and 15-minute interval with trusted EV load (intervals without load have no row). Computed in the same step and transaction as substation_daily_load, from the same sums: the day's largest kw is its peak_kw. Partitioned by load_date like the daily load.",
    )
    with op.batch_alter_table("substation_interval_load", schema=None) as batch_op:
        batch_op.create_index("ix_substation_interval_load_load_date", ["load_date"], unique=False)

    op.create_table(
        "transformer_interval_load",
        sa.Column("transformer_id", sa.Text(), nullable=False, comment="Distribution transformer identifier."),
        sa.Column(
            "interval_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval (UTC).",
        ),
        sa.Column(
            "load_date",
            sa.Date(),
            nullable=False,
            comment="Local date (EV_TIMEZONE) of interval_start: the daily partition.",
        ),
        sa.Column(
            "kw",
            sa.Float(),
            nullable=False,
            comment="Average EV power of trusted sessions in the interval, kW (partial intervals weighted by overlap).",
        ),
        sa.Column("kva", sa.Float(), nullable=False, comment="kw / EV_POWER_FACTOR."),
        sa.Column(
            "ev_count", sa.BigInteger(), nullable=False, comment="Distinct meters (EVs) charging in the interval."
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When this row was computed."),
        sa.PrimaryKeyConstraint("transformer_id", "interval_start"),
        comment="15-minute EV load profile per distribution transformer: one row per distribution transformer and 15-minute interval with trusted EV load (intervals without load have no row). Computed in the same step and transaction as transformer_daily_load, from the same sums: the day's largest kw is its peak_kw. Partitioned by load_date like the daily load.",
    )
    with op.batch_alter_table("transformer_interval_load", schema=None) as batch_op:
        batch_op.create_index("ix_transformer_interval_load_load_date", ["load_date"], unique=False)

    with op.batch_alter_table("transformer_daily_load", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "minutes_above_rating",
                sa.BigInteger(),
                nullable=True,
                comment="Minutes of the day (15 per interval) whose EV kVA exceeds kva_rating (kW above kva_rating x EV_POWER_FACTOR); null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "kwh_above_rating",
                sa.Float(),
                nullable=True,
                comment="EV energy in excess of the rating: sum over the intervals above it of (kW - kva_rating x EV_POWER_FACTOR) x 0.25 h; null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "planning_threshold",
                sa.Float(),
                nullable=True,
                comment="The planning threshold used, as a share of the rating (EV_PLANNING_THRESHOLD, default 1.0 = 100 %); null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "minutes_above_threshold",
                sa.BigInteger(),
                nullable=True,
                comment="Minutes of the day whose EV kW exceeds kva_rating x EV_POWER_FACTOR x planning_threshold; null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "kwh_above_threshold",
                sa.Float(),
                nullable=True,
                comment="EV energy in excess of the planning threshold, kWh (as kwh_above_rating); null when the rating is unknown.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "longest_above_threshold_minutes",
                sa.BigInteger(),
                nullable=True,
                comment="Longest continuous stretch of consecutive 15-minute intervals above the planning threshold on this day, minutes; null when the rating is unknown.",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("transformer_daily_load", schema=None) as batch_op:
        batch_op.drop_column("longest_above_threshold_minutes")
        batch_op.drop_column("kwh_above_threshold")
        batch_op.drop_column("minutes_above_threshold")
        batch_op.drop_column("planning_threshold")
        batch_op.drop_column("kwh_above_rating")
        batch_op.drop_column("minutes_above_rating")

    with op.batch_alter_table("transformer_interval_load", schema=None) as batch_op:
        batch_op.drop_index("ix_transformer_interval_load_load_date")

    op.drop_table("transformer_interval_load")
    with op.batch_alter_table("substation_interval_load", schema=None) as batch_op:
        batch_op.drop_index("ix_substation_interval_load_load_date")

    op.drop_table("substation_interval_load")
    with op.batch_alter_table("premise_ev_profile", schema=None) as batch_op:
        batch_op.drop_index("ix_premise_ev_profile_transformer_id")
        batch_op.drop_index("ix_premise_ev_profile_first_charging_day")

    op.drop_table("premise_ev_profile")
    op.drop_table("new_evs")
    with op.batch_alter_table("feeder_interval_load", schema=None) as batch_op:
        batch_op.drop_index("ix_feeder_interval_load_load_date")

    op.drop_table("feeder_interval_load")
