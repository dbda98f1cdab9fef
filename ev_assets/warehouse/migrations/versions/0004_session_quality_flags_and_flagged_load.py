"""session quality flags and flagged load (issue 8: timed_out, quality flags, flagged load kept apart)

Existing daily-load rows get flagged_energy_kwh = flagged_session_count = 0 (their load was all
counted as trusted); existing sessions get no flags until they are re-paired ( with
config mode: rebuild, then the queued days' daily load).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 13:58:38.076057

Write the operations out explicitly (op.add_column, op.create_table, ...): a migration is a frozen
step, it must not read ev_assets.warehouse.tables (the declarations move on). SQLite runs in batch
mode: wrap ALTERs in `with op.batch_alter_table("name") as batch:`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ev_charging_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "quality_flags",
                sa.Text(),
                nullable=True,
                comment="Comma-separated codes of the failed plausibility checks of a complete session; null when trusted. `power_above_charger_max`: Average power (energy / duration) exceeds EV_CHARGE_W_MAX: no home charger delivers it. `power_above_charge_w`: Average power exceeds the session's own ChargeW x EV_CHARGE_W_TOLERANCE. `duration_mismatch`: The reported ChargeDuration disagrees with end - start by more than half a unit plus 5 % (the duration_agreement rule); checked only when EV_DURATION_UNIT_VERIFIED says the unit is known to agree. `overlapping`: The session starts before the previous session on the same meter ends, or ends after the next one starts (strictly: back-to-back sessions are not an overlap). A flagged session counts in the daily load's flagged_energy_kwh, not in peak_kw or energy_kwh.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "quality_reasons",
                sa.Text(),
                nullable=True,
                comment="JSON list of sentences, one per flag, with the figures that failed; null when trusted.",
            )
        )
        batch_op.alter_column(
            "status",
            existing_type=sa.Text(),
            comment="complete, start_only, timed_out or end_only (see the table's description).",
            existing_comment="complete, start_only or end_only.",
            existing_nullable=False,
        )
        batch_op.create_index("ix_ev_charging_sessions_status_start_time", ["status", "start_time"], unique=False)
        batch_op.create_table_comment(
            "Charging sessions paired from start and end messages per meter. Event time is the session start (spec). status: complete (start and end, however long apart; a pair longer than EV_MAX_SESSION_H only when its energy fits ChargeW x duration x EV_CHARGE_W_TOLERANCE), start_only (no end yet, started at most EV_MAX_SESSION_H ago: still charging), timed_out (no end for longer than EV_MAX_SESSION_H: late or lost; becomes complete when its end arrives), end_only (its start never came). Only complete sessions count in the load.",
            existing_comment="Charging sessions paired from start and end messages per meter. Event time is the session start (spec). status: complete (start and end), start_only (charging, or its end never came), end_only (its start never came).",
        )

    with op.batch_alter_table("feeder_daily_load", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "flagged_energy_kwh",
                sa.Float(),
                nullable=False,
                server_default=sa.text("0"),
                comment="EV energy of sessions with quality flags delivered during this day, kWh: doubtful load, kept apart.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "flagged_session_count",
                sa.BigInteger(),
                nullable=False,
                server_default=sa.text("0"),
                comment="Sessions with quality flags that started on this day.",
            )
        )
        batch_op.alter_column(
            "session_count",
            existing_type=sa.BigInteger(),
            comment="Trusted sessions (no quality flags) that started on this day.",
            existing_comment="Sessions that started on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "ev_count",
            existing_type=sa.BigInteger(),
            comment="Distinct meters (EVs) with trusted load on this day.",
            existing_comment="Distinct meters (EVs) charging on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "energy_kwh",
            existing_type=sa.Float(),
            comment="EV energy of trusted sessions delivered during this day, kWh.",
            existing_comment="EV energy delivered during this day, kWh.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "peak_kw",
            existing_type=sa.Float(),
            comment="Coincident peak of trusted sessions: the largest 15-minute average of their summed load, kW (0 when the day has flagged load only).",
            existing_comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "peak_interval_start",
            existing_type=sa.DateTime(timezone=True),
            nullable=True,
            comment="Start of the 15-minute interval of the peak; null when the day has flagged load only.",
            existing_comment="Start of the 15-minute interval of the peak.",
        )
        batch_op.alter_column(
            "load_factor",
            existing_type=sa.Float(),
            comment="average_kw / peak_kw; null when peak_kw is 0.",
            existing_comment="average_kw / peak_kw.",
            existing_nullable=True,
        )
        batch_op.create_table_comment(
            "EV charging load per feeder and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only; sessions with quality flags are kept apart (flagged_energy_kwh, flagged_session_count) and never count in peak_kw, energy_kwh or ev_count.",
            existing_comment="EV charging load per feeder and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
        )

    with op.batch_alter_table("substation_daily_load", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "flagged_energy_kwh",
                sa.Float(),
                nullable=False,
                server_default=sa.text("0"),
                comment="EV energy of sessions with quality flags delivered during this day, kWh: doubtful load, kept apart.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "flagged_session_count",
                sa.BigInteger(),
                nullable=False,
                server_default=sa.text("0"),
                comment="Sessions with quality flags that started on this day.",
            )
        )
        batch_op.alter_column(
            "session_count",
            existing_type=sa.BigInteger(),
            comment="Trusted sessions (no quality flags) that started on this day.",
            existing_comment="Sessions that started on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "ev_count",
            existing_type=sa.BigInteger(),
            comment="Distinct meters (EVs) with trusted load on this day.",
            existing_comment="Distinct meters (EVs) charging on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "energy_kwh",
            existing_type=sa.Float(),
            comment="EV energy of trusted sessions delivered during this day, kWh.",
            existing_comment="EV energy delivered during this day, kWh.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "peak_kw",
            existing_type=sa.Float(),
            comment="Coincident peak of trusted sessions: the largest 15-minute average of their summed load, kW (0 when the day has flagged load only).",
            existing_comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "peak_interval_start",
            existing_type=sa.DateTime(timezone=True),
            nullable=True,
            comment="Start of the 15-minute interval of the peak; null when the day has flagged load only.",
            existing_comment="Start of the 15-minute interval of the peak.",
        )
        batch_op.alter_column(
            "load_factor",
            existing_type=sa.Float(),
            comment="average_kw / peak_kw; null when peak_kw is 0.",
            existing_comment="average_kw / peak_kw.",
            existing_nullable=True,
        )
        batch_op.create_table_comment(
            "EV charging load per substation and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only; sessions with quality flags are kept apart (flagged_energy_kwh, flagged_session_count) and never count in peak_kw, energy_kwh or ev_count.",
            existing_comment="EV charging load per substation and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
        )

    with op.batch_alter_table("transformer_daily_load", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "flagged_energy_kwh",
                sa.Float(),
                nullable=False,
                server_default=sa.text("0"),
                comment="EV energy of sessions with quality flags delivered during this day, kWh: doubtful load, kept apart.",
            )
        )
        batch_op.add_column(
            sa.Column(
                "flagged_session_count",
                sa.BigInteger(),
                nullable=False,
                server_default=sa.text("0"),
                comment="Sessions with quality flags that started on this day.",
            )
        )
        batch_op.alter_column(
            "session_count",
            existing_type=sa.BigInteger(),
            comment="Trusted sessions (no quality flags) that started on this day.",
            existing_comment="Sessions that started on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "ev_count",
            existing_type=sa.BigInteger(),
            comment="Distinct meters (EVs) with trusted load on this day.",
            existing_comment="Distinct meters (EVs) charging on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "energy_kwh",
            existing_type=sa.Float(),
            comment="EV energy of trusted sessions delivered during this day, kWh.",
            existing_comment="EV energy delivered during this day, kWh.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "peak_kw",
            existing_type=sa.Float(),
            comment="Coincident peak of trusted sessions: the largest 15-minute average of their summed load, kW (0 when the day has flagged load only).",
            existing_comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "peak_interval_start",
            existing_type=sa.DateTime(timezone=True),
            nullable=True,
            comment="Start of the 15-minute interval of the peak; null when the day has flagged load only.",
            existing_comment="Start of the 15-minute interval of the peak.",
        )
        batch_op.alter_column(
            "load_factor",
            existing_type=sa.Float(),
            comment="average_kw / peak_kw; null when peak_kw is 0.",
            existing_comment="average_kw / peak_kw.",
            existing_nullable=True,
        )
        batch_op.create_table_comment(
            "EV charging load per distribution transformer and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only; sessions with quality flags are kept apart (flagged_energy_kwh, flagged_session_count) and never count in peak_kw, energy_kwh or ev_count.",
            existing_comment="EV charging load per distribution transformer and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
        )


def downgrade() -> None:
    with op.batch_alter_table("transformer_daily_load", schema=None) as batch_op:
        batch_op.create_table_comment(
            "EV charging load per distribution transformer and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
            existing_comment="EV charging load per distribution transformer and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only; sessions with quality flags are kept apart (flagged_energy_kwh, flagged_session_count) and never count in peak_kw, energy_kwh or ev_count.",
        )
        batch_op.alter_column(
            "load_factor",
            existing_type=sa.Float(),
            comment="average_kw / peak_kw.",
            existing_comment="average_kw / peak_kw; null when peak_kw is 0.",
            existing_nullable=True,
        )
        batch_op.alter_column(
            "peak_interval_start",
            existing_type=sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval of the peak.",
            existing_comment="Start of the 15-minute interval of the peak; null when the day has flagged load only.",
        )
        batch_op.alter_column(
            "peak_kw",
            existing_type=sa.Float(),
            comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
            existing_comment="Coincident peak of trusted sessions: the largest 15-minute average of their summed load, kW (0 when the day has flagged load only).",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "energy_kwh",
            existing_type=sa.Float(),
            comment="EV energy delivered during this day, kWh.",
            existing_comment="EV energy of trusted sessions delivered during this day, kWh.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "ev_count",
            existing_type=sa.BigInteger(),
            comment="Distinct meters (EVs) charging on this day.",
            existing_comment="Distinct meters (EVs) with trusted load on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "session_count",
            existing_type=sa.BigInteger(),
            comment="Sessions that started on this day.",
            existing_comment="Trusted sessions (no quality flags) that started on this day.",
            existing_nullable=False,
        )
        batch_op.drop_column("flagged_session_count")
        batch_op.drop_column("flagged_energy_kwh")

    with op.batch_alter_table("substation_daily_load", schema=None) as batch_op:
        batch_op.create_table_comment(
            "EV charging load per substation and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
            existing_comment="EV charging load per substation and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only; sessions with quality flags are kept apart (flagged_energy_kwh, flagged_session_count) and never count in peak_kw, energy_kwh or ev_count.",
        )
        batch_op.alter_column(
            "load_factor",
            existing_type=sa.Float(),
            comment="average_kw / peak_kw.",
            existing_comment="average_kw / peak_kw; null when peak_kw is 0.",
            existing_nullable=True,
        )
        batch_op.alter_column(
            "peak_interval_start",
            existing_type=sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval of the peak.",
            existing_comment="Start of the 15-minute interval of the peak; null when the day has flagged load only.",
        )
        batch_op.alter_column(
            "peak_kw",
            existing_type=sa.Float(),
            comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
            existing_comment="Coincident peak of trusted sessions: the largest 15-minute average of their summed load, kW (0 when the day has flagged load only).",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "energy_kwh",
            existing_type=sa.Float(),
            comment="EV energy delivered during this day, kWh.",
            existing_comment="EV energy of trusted sessions delivered during this day, kWh.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "ev_count",
            existing_type=sa.BigInteger(),
            comment="Distinct meters (EVs) charging on this day.",
            existing_comment="Distinct meters (EVs) with trusted load on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "session_count",
            existing_type=sa.BigInteger(),
            comment="Sessions that started on this day.",
            existing_comment="Trusted sessions (no quality flags) that started on this day.",
            existing_nullable=False,
        )
        batch_op.drop_column("flagged_session_count")
        batch_op.drop_column("flagged_energy_kwh")

    with op.batch_alter_table("feeder_daily_load", schema=None) as batch_op:
        batch_op.create_table_comment(
            "EV charging load per feeder and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
            existing_comment="EV charging load per feeder and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only; sessions with quality flags are kept apart (flagged_energy_kwh, flagged_session_count) and never count in peak_kw, energy_kwh or ev_count.",
        )
        batch_op.alter_column(
            "load_factor",
            existing_type=sa.Float(),
            comment="average_kw / peak_kw.",
            existing_comment="average_kw / peak_kw; null when peak_kw is 0.",
            existing_nullable=True,
        )
        batch_op.alter_column(
            "peak_interval_start",
            existing_type=sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval of the peak.",
            existing_comment="Start of the 15-minute interval of the peak; null when the day has flagged load only.",
        )
        batch_op.alter_column(
            "peak_kw",
            existing_type=sa.Float(),
            comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
            existing_comment="Coincident peak of trusted sessions: the largest 15-minute average of their summed load, kW (0 when the day has flagged load only).",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "energy_kwh",
            existing_type=sa.Float(),
            comment="EV energy delivered during this day, kWh.",
            existing_comment="EV energy of trusted sessions delivered during this day, kWh.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "ev_count",
            existing_type=sa.BigInteger(),
            comment="Distinct meters (EVs) charging on this day.",
            existing_comment="Distinct meters (EVs) with trusted load on this day.",
            existing_nullable=False,
        )
        batch_op.alter_column(
            "session_count",
            existing_type=sa.BigInteger(),
            comment="Sessions that started on this day.",
            existing_comment="Trusted sessions (no quality flags) that started on this day.",
            existing_nullable=False,
        )
        batch_op.drop_column("flagged_session_count")
        batch_op.drop_column("flagged_energy_kwh")

    with op.batch_alter_table("ev_charging_sessions", schema=None) as batch_op:
        batch_op.create_table_comment(
            "Charging sessions paired from start and end messages per meter. Event time is the session start (spec). status: complete (start and end), start_only (charging, or its end never came), end_only (its start never came).",
            existing_comment="Charging sessions paired from start and end messages per meter. Event time is the session start (spec). status: complete (start and end, however long apart; a pair longer than EV_MAX_SESSION_H only when its energy fits ChargeW x duration x EV_CHARGE_W_TOLERANCE), start_only (no end yet, started at most EV_MAX_SESSION_H ago: still charging), timed_out (no end for longer than EV_MAX_SESSION_H: late or lost; becomes complete when its end arrives), end_only (its start never came). Only complete sessions count in the load.",
        )
        batch_op.drop_index("ix_ev_charging_sessions_status_start_time")
        batch_op.alter_column(
            "status",
            existing_type=sa.Text(),
            comment="complete, start_only or end_only.",
            existing_comment="complete, start_only, timed_out or end_only (see the table's description).",
            existing_nullable=False,
        )
        batch_op.drop_column("quality_reasons")
        batch_op.drop_column("quality_flags")
