"""ev_charging_behavior and transformer_overload_forecast (issue 28): the charging behavior learned
from the sessions and the ten-year overload forecast per transformer, two snapshot tables filled by
their next refresh.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

Written out explicitly: a migration is a frozen step, it must not read ev_assets.warehouse.tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ev_charging_behavior",
        sa.Column(
            "charger_level", sa.Text(), nullable=False, comment="level_1, level_2 or dc (the EV's median ChargeW)."
        ),
        sa.Column("day_type", sa.Text(), nullable=False, comment="weekday or weekend (local start date)."),
        sa.Column(
            "season",
            sa.Text(),
            nullable=False,
            comment="winter (Dec-Feb), spring (Mar-May), summer (Jun-Aug), fall (Sep-Nov).",
        ),
        sa.Column("plug_in_hour", sa.BigInteger(), nullable=False, comment="Local hour the sessions started (0-23)."),
        sa.Column(
            "session_count",
            sa.BigInteger(),
            nullable=False,
            comment="Sessions that started in this hour (the sample size).",
        ),
        sa.Column(
            "plug_in_share",
            sa.Float(),
            nullable=True,
            comment="session_count / group_session_count: the plug-in time distribution.",
        ),
        sa.Column("energy_kwh_mean", sa.Float(), nullable=True, comment="Mean energy of these sessions, kWh."),
        sa.Column("energy_kwh_p10", sa.Float(), nullable=True, comment="10th percentile of their energy, kWh."),
        sa.Column("energy_kwh_p50", sa.Float(), nullable=True, comment="Median energy, kWh."),
        sa.Column("energy_kwh_p90", sa.Float(), nullable=True, comment="90th percentile of their energy, kWh."),
        sa.Column("power_kw_p10", sa.Float(), nullable=True, comment="10th percentile of their ChargeW, kW."),
        sa.Column("power_kw_p50", sa.Float(), nullable=True, comment="Median ChargeW, kW."),
        sa.Column("power_kw_p90", sa.Float(), nullable=True, comment="90th percentile of their ChargeW, kW."),
        sa.Column(
            "charging_minutes_mean",
            sa.Float(),
            nullable=True,
            comment="Mean minutes of load (EV_LOAD_SHAPE: ChargeW until the energy is in).",
        ),
        sa.Column(
            "group_session_count",
            sa.BigInteger(),
            nullable=True,
            comment="Sessions of the level, day type and season (all hours).",
        ),
        sa.Column(
            "ev_days",
            sa.BigInteger(),
            nullable=True,
            comment="EV-days of the level, day type and season: days EVs of the level were present.",
        ),
        sa.Column(
            "sessions_per_ev_day",
            sa.Float(),
            nullable=True,
            comment="group_session_count / ev_days; null without EV-days.",
        ),
        sa.Column("history_end", sa.Date(), nullable=True, comment="Last local day of the history learned from."),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When the snapshot was computed."),
        sa.PrimaryKeyConstraint("charger_level", "day_type", "season", "plug_in_hour"),
        comment="How this utility's EVs charge, learned from the trusted complete sessions (no quality flags) of the whole history: a snapshot, one row per charger level (of the EV's median ChargeW), day type (weekday / weekend, local start date), meteorological season and local plug-in hour with sessions. Sessions per EV-day count every day from an EV's first session to history_end, charging or not. What the overload forecast draws from.",
    )
    op.create_table(
        "transformer_overload_forecast",
        sa.Column("transformer_id", sa.Text(), nullable=False, comment="Transformer identifier."),
        sa.Column("scenario", sa.Text(), nullable=False, comment="Adoption scenario (low, base, high by default)."),
        sa.Column("year", sa.BigInteger(), nullable=False, comment="Calendar year forecast."),
        sa.Column("feeder_id", sa.Text(), nullable=True, comment="Feeder of the transformer (its adoption curve)."),
        sa.Column("kva_rating", sa.Float(), nullable=True, comment="Rating, kVA; null: unrated (no overload figures)."),
        sa.Column(
            "premises", sa.BigInteger(), nullable=False, comment="Premises the transformer serves as of as_of_date."
        ),
        sa.Column(
            "evs_now", sa.BigInteger(), nullable=False, comment="Premises with an EV seen charging by as_of_date."
        ),
        sa.Column("expected_evs", sa.Float(), nullable=False, comment="Expected EVs at the end of the year."),
        sa.Column(
            "ev_peak_kw_p50",
            sa.Float(),
            nullable=True,
            comment="Median (P50) of the year's 15-minute EV peak, kW (EV load only).",
        ),
        sa.Column("ev_peak_kw_p90", sa.Float(), nullable=True, comment="P90 of the year's 15-minute EV peak, kW."),
        sa.Column(
            "peak_kva_p50",
            sa.Float(),
            nullable=True,
            comment="P50 of the year's 15-minute peak of EV + base load, kVA.",
        ),
        sa.Column(
            "peak_kva_p90",
            sa.Float(),
            nullable=True,
            comment="P90 of the year's 15-minute peak of EV + base load, kVA.",
        ),
        sa.Column(
            "p_exceed_rating",
            sa.Float(),
            nullable=True,
            comment="Probability that the year's peak kVA exceeds kva_rating.",
        ),
        sa.Column(
            "p_exceed_threshold",
            sa.Float(),
            nullable=True,
            comment="Probability that the year's peak kVA exceeds EV_PLANNING_THRESHOLD x kva_rating.",
        ),
        sa.Column(
            "ev_peak_kw_p50_managed", sa.Float(), nullable=True, comment="ev_peak_kw_p50 under managed charging."
        ),
        sa.Column(
            "ev_peak_kw_p90_managed", sa.Float(), nullable=True, comment="ev_peak_kw_p90 under managed charging."
        ),
        sa.Column("peak_kva_p50_managed", sa.Float(), nullable=True, comment="peak_kva_p50 under managed charging."),
        sa.Column("peak_kva_p90_managed", sa.Float(), nullable=True, comment="peak_kva_p90 under managed charging."),
        sa.Column(
            "p_exceed_rating_managed", sa.Float(), nullable=True, comment="p_exceed_rating under managed charging."
        ),
        sa.Column(
            "p_exceed_threshold_managed",
            sa.Float(),
            nullable=True,
            comment="p_exceed_threshold under managed charging.",
        ),
        sa.Column(
            "first_year_p10",
            sa.BigInteger(),
            nullable=True,
            comment="First year (this scenario) with p_exceed_threshold >= 0.1; null: none in the horizon.",
        ),
        sa.Column(
            "first_year_p50",
            sa.BigInteger(),
            nullable=True,
            comment="First year with p_exceed_threshold >= 0.5; null: none in the horizon.",
        ),
        sa.Column(
            "first_year_p50_managed",
            sa.BigInteger(),
            nullable=True,
            comment="First year with p_exceed_threshold_managed >= 0.5; null: none.",
        ),
        sa.Column(
            "years_deferred",
            sa.BigInteger(),
            nullable=True,
            comment="first_year_p50_managed - first_year_p50: the years of upgrade managed charging defers (a managed transformer that never reaches 0.5 in the horizon counts as the year after it: at least this).",
        ),
        sa.Column(
            "as_of_date", sa.Date(), nullable=False, comment="Last local day of the history the forecast was fitted on."
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When the snapshot was computed."),
        sa.PrimaryKeyConstraint("transformer_id", "scenario", "year"),
        comment="When each transformer overloads as EVs keep arriving: per transformer, adoption scenario (EV_FORECAST_ADOPTION_SCENARIOS) and calendar year after as_of_date (EV_FORECAST_YEARS), a seeded Monte Carlo (EV_FORECAST_DRAWS) of the year's coincident 15-minute peak: EVs placed on premises by the feeder's adoption curve, their charging drawn from observed EVs (ev_charging_behavior), plus the base load of the aging model (EV_BASE_LOAD_PU_PROFILE x scale x rating; EV kVA = kW / EV_POWER_FACTOR). *_managed: the same with EV_FORECAST_MANAGED_SHARE of sessions moved into EV_FORECAST_MANAGED_WINDOW. A snapshot; docs/planning.md explains the method and what it cannot know.",
    )
    op.create_index(
        "ix_transformer_overload_forecast_scenario_first_year_p50",
        "transformer_overload_forecast",
        ["scenario", "first_year_p50"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_transformer_overload_forecast_scenario_first_year_p50", table_name="transformer_overload_forecast"
    )
    op.drop_table("transformer_overload_forecast")
    op.drop_table("ev_charging_behavior")
