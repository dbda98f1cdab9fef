"""EV adoption by premise: what an EV program targets customers with. Pure polars.

From a premise's trusted complete sessions (no quality flags) and their 15-minute load
(`load_profile.interval_loads`, so on-peak energy follows the same load shape as the planning tables):

- first and last charging day (local event dates), active span in weeks (at least one week, so a
  premise seen on one day is not extrapolated to 7 sessions a week), sessions per week over it;
- charger level inferred from the median ChargeW: Level 1 below 2.0 kW, Level 2 from 2.0 up to
  19.2 kW, DC above 19.2 kW (DOMAIN.md's charger figures);
- typical start hour: the most frequent local start hour (ties: the earliest);
- on-peak energy share: the share of the energy delivered in 15-minute intervals that start inside
  a time-of-use on-peak window (local time; windows lie on 15-minute boundaries, so an interval is
  wholly in or wholly out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

LEVEL_1_BELOW_W = 2_000.0
LEVEL_2_UP_TO_W = 19_200.0
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TOU_ON_PEAK = "mon-fri 16:00-21:00"


@dataclass(frozen=True)
class TouWindow:
    """An on-peak window: ISO weekdays (1 = Monday) and local minutes of the day [start, end)."""

    weekdays: frozenset[int]
    start_minute: int
    end_minute: int


_WINDOW = re.compile(r"^\s*([a-z,\-]+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_tou_windows(text: str) -> tuple[TouWindow, ...]:
    """`mon-fri 16:00-21:00; sat,sun 17:00-19:00` -> windows. Days: names, ranges (`mon-fri`,
    `fri-mon` wraps) or lists; times on 15-minute boundaries, 24:00 allowed as an end. Empty: none."""
    windows = []
    for part in filter(None, (p.strip() for p in text.lower().split(";"))):
        match = _WINDOW.match(part)
        if not match:
            raise ValueError(f"TOU window {part!r}: expected e.g. {DEFAULT_TOU_ON_PEAK!r}")
        days_text, h1, m1, h2, m2 = match.groups()
        days: set[int] = set()
        for item in days_text.split(","):
            ends = item.split("-")
            if any(e not in WEEKDAYS for e in ends) or len(ends) > 2:
                raise ValueError(f"TOU window {part!r}: days are {', '.join(WEEKDAYS)}, a range a-b or a list a,b")
            first, last = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
            days.update((first + i) % 7 + 1 for i in range((last - first) % 7 + 1))
        start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
        if not (0 <= start < end <= 24 * 60) or start % 15 or end % 15:
            raise ValueError(f"TOU window {part!r}: start before end, within 00:00-24:00, on 15-minute boundaries")
        windows.append(TouWindow(frozenset(days), start, end))
    return tuple(windows)


def in_windows(local: pl.Expr, windows: tuple[TouWindow, ...]) -> pl.Expr:
    """Whether each local timestamp lies in one of the windows."""
    minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    inside = pl.lit(False)
    for w in windows:
        inside = inside | (
            local.dt.weekday().is_in(sorted(w.weekdays)) & (minute >= w.start_minute) & (minute < w.end_minute)
        )
    return inside


def charger_level(median_w: pl.Expr) -> pl.Expr:
    return (
        pl.when(median_w < LEVEL_1_BELOW_W)
        .then(pl.lit("level_1"))
        .when(median_w <= LEVEL_2_UP_TO_W)
        .then(pl.lit("level_2"))
        .when(median_w > LEVEL_2_UP_TO_W)
        .then(pl.lit("dc"))
    )


def premise_profile(
    sessions: pl.DataFrame,
    intervals: pl.DataFrame,
    *,
    tz: str,
    windows: tuple[TouWindow, ...],
    updated_at: datetime,
) -> pl.DataFrame:
    """One row per premise of `sessions` (trusted complete sessions with a premise_id) and their
    `intervals` (`interval_loads(..., keep=("premise_id",))`)."""
    sessions = sessions.drop_nulls("premise_id")
    local_start = pl.col("start_time").dt.convert_time_zone(tz)
    per_premise = (
        sessions.sort("start_time")
        .group_by("premise_id")
        .agg(
            pl.col("transformer_id").last(),
            pl.col("feeder_id").last(),
            pl.col("meter_id").n_unique().cast(pl.Int64).alias("meter_count"),
            pl.col("event_date").min().alias("first_charging_day"),
            pl.col("event_date").max().alias("last_charging_day"),
            pl.len().cast(pl.Int64).alias("session_count"),
            (pl.col("energy_wh").sum() / 1000).alias("energy_kwh"),
            pl.col("charge_w").median().alias("median_charge_w"),
        )
    )
    hours = (
        sessions.with_columns(local_start.dt.hour().cast(pl.Int64).alias("hour"))
        .group_by("premise_id", "hour")
        .agg(pl.len().alias("n"))
        .sort(["premise_id", "n", "hour"], descending=[False, True, False])
        .group_by("premise_id", maintain_order=True)
        .agg(pl.col("hour").first().alias("typical_start_hour"))
    )
    on_peak = in_windows(pl.col("interval_start").dt.convert_time_zone(tz), windows)
    peak_energy = (
        intervals.drop_nulls("premise_id")
        .group_by("premise_id")
        .agg(pl.col("kwh").filter(on_peak).sum().alias("_on_peak_kwh"), pl.col("kwh").sum().alias("_interval_kwh"))
    )
    span_days = (pl.col("last_charging_day") - pl.col("first_charging_day")).dt.total_days() + 1
    return (
        per_premise.join(hours, on="premise_id", how="left")
        .join(peak_energy, on="premise_id", how="left")
        .with_columns(
            (pl.max_horizontal(span_days, pl.lit(7)) / 7).cast(pl.Float64).alias("active_weeks"),
            charger_level(pl.col("median_charge_w")).alias("charger_level"),
            pl.when(pl.col("_interval_kwh") > 0)
            .then(pl.col("_on_peak_kwh") / pl.col("_interval_kwh"))
            .alias("on_peak_energy_share"),
            pl.lit(updated_at).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        )
        .with_columns((pl.col("session_count") / pl.col("active_weeks")).alias("sessions_per_week"))
        .drop("_on_peak_kwh", "_interval_kwh")
        .sort("premise_id")
    )


def new_evs(profile: pl.DataFrame, *, as_of: date, days: int, updated_at: datetime) -> pl.DataFrame:
    """Premises first seen in the `days` days up to `as_of` (inclusive)."""
    return profile.filter(
        pl.col("first_charging_day").is_between(as_of - timedelta(days=days - 1), as_of)
    ).with_columns(
        pl.lit(as_of).alias("as_of_date"), pl.lit(updated_at).cast(pl.Datetime("us", "UTC")).alias("updated_at")
    )
