"""The daily partitions of the planning tables: local days from the history's first day to today.

The first day is EV_PARTITIONS_START when it is set; else the day `ev-awareness init` recorded in
DAGSTER_HOME (`ev_partitions_start`: the warehouse's first event day, or a week before the day a new
deployment was initialised); else EV_PARTITIONS_START's default. So the UI lists the days this
deployment holds, not sixteen years of "missing" days, and importing the definitions reads a setting
and a file, never the database. Fixed when the code location loads (Dagster needs them then). A day
outside them can get no daily load, so it is never dropped silently: `days_outside_partitions` finds
such days, and the sessions asset's `load_days_within_partitions` check fails with the message below.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from ev_assets.settings import Settings, dagster_home, environment_variable

# The file `ev-awareness init` records the history's first day in (one ISO date), in DAGSTER_HOME.
RECORDED_START_FILE = "ev_partitions_start"
# A new deployment's history starts this many days before it was initialised.
NEW_DEPLOYMENT_HISTORY_DAYS = 7


def recorded_start_path() -> Path:
    return dagster_home() / RECORDED_START_FILE


def configured_partitions_start(settings: Settings) -> date:
    """EV_PARTITIONS_START when set, else the day `init` recorded, else the setting's default."""
    if environment_variable("partitions_start") in os.environ:
        return settings.partitions_start
    recorded = recorded_start_path()
    if recorded.exists():
        return date.fromisoformat(recorded.read_text().strip())
    return settings.partitions_start


_SETTINGS = Settings()
PARTITIONS_START: date = configured_partitions_start(_SETTINGS)
PARTITIONS_TIMEZONE: str = _SETTINGS.timezone

DAILY_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START.isoformat(),
    timezone=PARTITIONS_TIMEZONE,
    end_offset=1,  # today's partition exists, so the load of the day in progress shows up
)


def last_partition_day() -> date:
    return datetime.now(ZoneInfo(PARTITIONS_TIMEZONE)).date() + timedelta(days=1)


def days_outside_partitions(days: list[date]) -> list[date]:
    last = last_partition_day()
    return sorted(d for d in set(days) if d < PARTITIONS_START or d > last)


def days_within_partitions(days: list[date]) -> list[date]:
    outside = set(days_outside_partitions(days))
    return sorted(d for d in set(days) if d not in outside)


def outside_partitions_message(days: list[date]) -> str:
    early = [d for d in days if d < PARTITIONS_START]
    shown = ", ".join(d.isoformat() for d in days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")
    if early:
        return (
            f"{len(days)} local days with charging lie outside the daily partitions ({shown}): their daily "
            f"load cannot be computed. Set EV_PARTITIONS_START={min(early).isoformat()} (or earlier) and "
            "restart the code location; the days stay queued and are computed then."
        )
    return (
        f"{len(days)} local days with charging lie after tomorrow ({shown}): check the agents' clocks "
        "and EV_TIMEZONE; the days stay queued."
    )
