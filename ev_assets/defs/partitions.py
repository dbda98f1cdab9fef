"""The daily partitions of the planning tables: local days from EV_PARTITIONS_START to tomorrow.

Fixed when the code location loads (Dagster needs them then). A day outside them can get no daily
load, so it is never dropped silently: `days_outside_partitions` finds such days, and the sessions
asset's `load_days_within_partitions` check fails with the message below.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from ev_assets.settings import Settings

_SETTINGS = Settings()
PARTITIONS_START: date = _SETTINGS.partitions_start
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
