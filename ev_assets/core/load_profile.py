"""Load stage: 15-minute EV load and the daily planning aggregates per transformer, feeder and
substation. Pure polars.

Coincident peak (DOMAIN.md): the largest, over 15-minute intervals, of the summed load of every
session charging in the interval, partial intervals weighted by overlap.

A session's load shape (the setting ``load_shape``; the intervals' kWh always add up to the
session's energy):

- ``charge_w_then_idle`` (default): a car left plugged in draws its charger's power until the
  battery is full, then idles. When a session's average power, energy / (end - start), is below
  ``idle_ratio`` x ChargeW (default 0.8), its load is ChargeW from the start for
  energy / ChargeW hours, then zero: 14 kWh over 10 h at 7,000 W is 7 kW for 2 h, not 1.4 kW for
  10 h. A session whose average power is at least ``idle_ratio`` x ChargeW (it charged most of the
  time), or with no ChargeW, is spread evenly as below.
- ``even``: the average power, energy / duration, over the whole session.

Doubtful load is kept apart: a session with quality flags (``ev_assets.core.quality``) adds its
energy to ``flagged_energy_kwh`` and its start to ``flagged_session_count``, never to
``peak_kw``, ``energy_kwh``, ``ev_count`` or ``session_count``, which come from trusted sessions
only. A session without a ``quality_flags`` column is trusted.

Daily average power (``average_kw``) is the day's energy over the real length of the local day:
23 h on the day clocks spring forward, 25 h on the day they fall back.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl

from ev_assets.core.enrich import as_of_join

INTERVAL = timedelta(minutes=15)
INTERVAL_HOURS = INTERVAL.total_seconds() / 3600

# Each planning level: its key, and the attributes of the key carried into its daily row.
LEVELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "transformer": ("transformer_id", ("feeder_id", "substation_id")),
    "feeder": ("feeder_id", ("substation_id",)),
    "substation": ("substation_id", ()),
}


# Days computed at a time by the daily-load step (a day's load depends only on the sessions that
# overlap it, so any chunk gives the same rows): bounds its memory, whatever the range.
DEFAULT_CHUNK_DAYS = 7

LOAD_SHAPES = ("charge_w_then_idle", "even")
DEFAULT_LOAD_SHAPE = "charge_w_then_idle"
# Average power below this share of ChargeW means the car idled for part of the session.
DEFAULT_IDLE_RATIO = 0.8


def load_until_and_kw(
    load_shape: str = DEFAULT_LOAD_SHAPE, idle_ratio: float = DEFAULT_IDLE_RATIO
) -> tuple[pl.Expr, pl.Expr]:
    """(end of the load, power while loading in kW) of each session under `load_shape`."""
    if load_shape not in LOAD_SHAPES:
        raise ValueError(f"load_shape must be one of {', '.join(LOAD_SHAPES)}; got {load_shape!r}")
    if load_shape == "even":
        return pl.col("end_time"), pl.col("average_kw")
    charging_us = (pl.col("energy_wh") / pl.col("charge_w") * 3.6e9).round(0).cast(pl.Int64)
    idles = (
        (pl.col("charge_w") > 0)
        & (pl.col("energy_wh") > 0)
        & (pl.col("average_kw") * 1000 < idle_ratio * pl.col("charge_w"))
    ).fill_null(False)
    until = (
        pl.when(idles).then(pl.col("start_time") + pl.duration(microseconds=charging_us)).otherwise(pl.col("end_time"))
    )
    # Energy over the (microsecond-rounded) charging time: ChargeW to 1e-12, and exact kWh.
    charging_h = (until - pl.col("start_time")).dt.total_microseconds() / 3.6e9
    kw = pl.when(idles).then(pl.col("energy_wh") / 1000 / charging_h).otherwise(pl.col("average_kw"))
    return until, kw


def interval_loads(
    sessions: pl.DataFrame,
    *,
    load_shape: str = DEFAULT_LOAD_SHAPE,
    idle_ratio: float = DEFAULT_IDLE_RATIO,
    keep: tuple[str, ...] = (),
) -> pl.DataFrame:
    """One row per complete session and 15-minute interval it charges in: kwh in the interval and
    kw, the interval's average power. `load_shape` and `idle_ratio`: see the module docstring;
    `keep`: further session columns carried to each row (e.g. premise_id)."""
    until, load_kw = load_until_and_kw(load_shape, idle_ratio)
    complete = sessions.filter(
        (pl.col("status") == "complete") & (pl.col("end_time") > pl.col("start_time"))
    ).with_columns(until.alias("_load_until"), load_kw.alias("_load_kw"), _flagged(sessions).alias("flagged"))
    every = f"{int(INTERVAL.total_seconds() // 60)}m"
    exploded = complete.select(
        "meter_id",
        "transformer_id",
        "feeder_id",
        "substation_id",
        *keep,
        "start_time",
        "_load_until",
        "_load_kw",
        "flagged",
        pl.datetime_ranges(
            pl.col("start_time").dt.truncate(every),
            (pl.col("_load_until") - timedelta(microseconds=1)).dt.truncate(every),
            interval=every,
        ).alias("interval_start"),
    ).explode("interval_start")
    interval_end = pl.col("interval_start") + INTERVAL
    overlap_h = (
        pl.min_horizontal(pl.col("_load_until"), interval_end)
        - pl.max_horizontal(pl.col("start_time"), pl.col("interval_start"))
    ).dt.total_microseconds() / 3.6e9
    kwh = pl.col("_load_kw") * overlap_h
    return exploded.select(
        "meter_id",
        "transformer_id",
        "feeder_id",
        "substation_id",
        *keep,
        "interval_start",
        kwh.alias("kwh"),
        (kwh / INTERVAL_HOURS).alias("kw"),
        "flagged",
    )


def _flagged(sessions: pl.DataFrame) -> pl.Expr:
    """Whether each session carries quality flags (doubtful load)."""
    if "quality_flags" not in sessions.columns:
        return pl.lit(False)
    return pl.col("quality_flags").is_not_null()


def with_load_date(intervals: pl.DataFrame, tz: str) -> pl.DataFrame:
    """`interval_loads` rows with their load_date, the local date (tz) of interval_start: computed
    once for the several levels and tables of a range (daily_load, interval_profile and
    level_per_interval take it as it is when present)."""
    if "load_date" in intervals.columns:
        return intervals
    return intervals.with_columns(pl.col("interval_start").dt.convert_time_zone(tz).dt.date().alias("load_date"))


def daily_load(
    intervals: pl.DataFrame,
    sessions: pl.DataFrame,
    *,
    level: str,
    tz: str,
    first_day: date,
    last_day: date,
    updated_at: datetime,
    per_interval: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Daily rows of `level` (transformer, feeder or substation) for local days first..last.
    `per_interval`: `level_per_interval` of the same arguments, when the caller has it already."""
    key, attributes = LEVELS[level]
    in_range = pl.col("load_date").is_between(first_day, last_day)
    if "flagged" not in intervals.columns:
        intervals = intervals.with_columns(pl.lit(False).alias("flagged"))
    every = with_load_date(intervals.drop_nulls(key), tz).filter(in_range)
    loads = every.filter(~pl.col("flagged"))
    days = every.group_by(key, "load_date").agg(*[pl.col(a).drop_nulls().first() for a in attributes])

    # The same 15-minute sums as the interval profile (`interval_profile`): the daily peak is
    # the profile's maximum by construction.
    if per_interval is None:
        per_interval = _per_interval(loads, key)
    peaks = (
        per_interval.sort("kw", "interval_start", descending=[True, False])
        .group_by(key, "load_date", maintain_order=True)
        .agg(pl.col("kw").first().alias("peak_kw"), pl.col("interval_start").first().alias("peak_interval_start"))
    )
    # Each EV's own 15-minute peak of the day: their sum over the coincident peak is the
    # diversity factor planners use to scale per-EV figures.
    ev_peaks = (
        loads.group_by(key, "load_date", "meter_id", "interval_start")
        .agg(pl.col("kw").sum())
        .group_by(key, "load_date", "meter_id")
        .agg(pl.col("kw").max())
    )
    diversity = ev_peaks.group_by(key, "load_date").agg(
        pl.len().alias("ev_count"), pl.col("kw").sum().alias("_sum_individual_peaks")
    )
    energy = every.group_by(key, "load_date").agg(
        pl.col("kwh").filter(~pl.col("flagged")).sum().alias("energy_kwh"),
        pl.col("kwh").filter(pl.col("flagged")).sum().alias("flagged_energy_kwh"),
    )
    session_flagged = _flagged(sessions)
    started = (
        sessions.filter(pl.col("status") == "complete")
        .drop_nulls(key)
        .with_columns(session_flagged.alias("_flagged"))
        .rename({"event_date": "load_date"})
        .filter(in_range)
        .group_by(key, "load_date")
        .agg(
            (~pl.col("_flagged")).sum().cast(pl.Int64).alias("session_count"),
            pl.col("_flagged").sum().cast(pl.Int64).alias("flagged_session_count"),
        )
    )
    on = [key, "load_date"]
    peak = pl.col("peak_kw")
    return (
        days.join(peaks, on=on, how="left")
        .join(energy, on=on, how="left")
        .join(diversity, on=on, how="left")
        .join(started, on=on, how="left")
        .with_columns(
            pl.col("peak_kw").fill_null(0.0),
            pl.col("energy_kwh").fill_null(0.0),
            pl.col("flagged_energy_kwh").fill_null(0.0),
            pl.col("session_count").fill_null(0),
            pl.col("flagged_session_count").fill_null(0),
            pl.col("ev_count").fill_null(0).cast(pl.Int64),
        )
        .with_columns((pl.col("energy_kwh") / local_day_hours(pl.col("load_date"), tz)).alias("average_kw"))
        .with_columns(
            pl.when(peak > 0).then(pl.col("average_kw") / peak).alias("load_factor"),
            pl.when(peak > 0).then(pl.col("_sum_individual_peaks") / peak).alias("diversity_factor"),
            pl.lit(updated_at).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        )
        .drop("_sum_individual_peaks")
        .sort(key, "load_date")
    )


def _trusted_in_days(intervals: pl.DataFrame, key: str, tz: str, first_day: date, last_day: date) -> pl.DataFrame:
    """Trusted interval loads of `key` on local days first..last, with their load_date."""
    if "flagged" not in intervals.columns:
        intervals = intervals.with_columns(pl.lit(False).alias("flagged"))
    return with_load_date(intervals.drop_nulls(key).filter(~pl.col("flagged")), tz).filter(
        pl.col("load_date").is_between(first_day, last_day)
    )


def level_per_interval(
    intervals: pl.DataFrame, *, level: str, tz: str, first_day: date, last_day: date
) -> pl.DataFrame:
    """Summed trusted kW and distinct charging EVs per key of `level` and 15-minute interval of
    local days first..last: what both `daily_load` (the peak) and `interval_profile` start from."""
    key, _ = LEVELS[level]
    return _per_interval(_trusted_in_days(intervals, key, tz, first_day, last_day), key)


def _per_interval(loads: pl.DataFrame, key: str) -> pl.DataFrame:
    """Summed trusted kW and distinct charging EVs per key and 15-minute interval."""
    return loads.group_by(key, "load_date", "interval_start").agg(
        pl.col("kw").sum(), pl.col("meter_id").n_unique().cast(pl.Int64).alias("ev_count")
    )


def interval_profile(
    intervals: pl.DataFrame,
    *,
    level: str,
    tz: str,
    first_day: date,
    last_day: date,
    power_factor: float,
    updated_at: datetime,
    per_interval: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The 15-minute load profile of `level` on local days first..last: one row per key and
    interval with trusted load (kw > 0): kw (the interval's average power), kva (kw / power
    factor) and ev_count (distinct meters charging in it). Its daily maximum is the daily
    `peak_kw` (both come from `_per_interval`). `per_interval`: as in `daily_load`."""
    key, _ = LEVELS[level]
    if per_interval is None:
        per_interval = level_per_interval(intervals, level=level, tz=tz, first_day=first_day, last_day=last_day)
    return (
        per_interval.filter(pl.col("kw") > 0)
        .with_columns(
            (pl.col("kw") / power_factor).alias("kva"),
            pl.lit(updated_at).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        )
        .sort(key, "interval_start")
    )


def overload_exposure(
    profile: pl.DataFrame, daily: pl.DataFrame, *, power_factor: float, planning_threshold: float
) -> pl.DataFrame:
    """Overload exposure per transformer-day, added to the rated daily rows (`daily` has
    kva_rating) from its 15-minute profile (`interval_profile(level="transformer")`).

    The limit in kW is kva_rating x power factor (the kW at which the EV load's kVA equals the
    rating); the planning limit is that times `planning_threshold` (1.0 = 100 % of the rating).
    Per day, over the profile's intervals:

    - minutes_above_*: 15 x the intervals whose average kW exceeds the limit (strictly);
    - kwh_above_*: the energy in excess of the limit, sum of (kW - limit) x 0.25 h over them;
    - longest_above_threshold_minutes: the longest run of consecutive intervals (15 minutes
      apart in UTC, so a DST change does not break or join a run) above the planning limit.

    Null when the rating is unknown; 0 when the load never exceeds it.
    """
    key = "transformer_id"
    limits = daily.select(
        key,
        "load_date",
        (pl.col("kva_rating") * power_factor).alias("_rating_kw"),
        (pl.col("kva_rating") * power_factor * planning_threshold).alias("_limit_kw"),
    )
    minutes = int(INTERVAL.total_seconds() // 60)
    above = profile.select(key, "load_date", "interval_start", "kw").join(limits, on=[key, "load_date"], how="inner")
    excess_rating = (pl.col("kw") - pl.col("_rating_kw")).clip(lower_bound=0)
    excess_limit = (pl.col("kw") - pl.col("_limit_kw")).clip(lower_bound=0)
    sums = above.group_by(key, "load_date").agg(
        ((pl.col("kw") > pl.col("_rating_kw")).sum() * minutes).cast(pl.Int64).alias("minutes_above_rating"),
        (excess_rating.sum() * INTERVAL_HOURS).alias("kwh_above_rating"),
        ((pl.col("kw") > pl.col("_limit_kw")).sum() * minutes).cast(pl.Int64).alias("minutes_above_threshold"),
        (excess_limit.sum() * INTERVAL_HOURS).alias("kwh_above_threshold"),
    )
    over = above.filter(pl.col("kw") > pl.col("_limit_kw")).sort(key, "load_date", "interval_start")
    runs = (
        over.with_columns(
            (pl.col("interval_start").diff().over(key, "load_date") != INTERVAL)
            .fill_null(True)
            .cum_sum()
            .over(key, "load_date")
            .alias("_run")
        )
        .group_by(key, "load_date", "_run")
        .agg(pl.len().alias("_n"))
        .group_by(key, "load_date")
        .agg((pl.col("_n").max() * minutes).cast(pl.Int64).alias("longest_above_threshold_minutes"))
    )
    rated = pl.col("kva_rating").is_not_null()
    out = daily.join(sums, on=[key, "load_date"], how="left").join(runs, on=[key, "load_date"], how="left")
    return out.with_columns(
        pl.when(rated).then(pl.lit(planning_threshold)).cast(pl.Float64).alias("planning_threshold"),
        *[
            pl.when(rated).then(pl.col(c).fill_null(0)).alias(c)
            for c in (
                "minutes_above_rating",
                "kwh_above_rating",
                "minutes_above_threshold",
                "kwh_above_threshold",
                "longest_above_threshold_minutes",
            )
        ],
    )


def local_day_hours(day: pl.Expr, tz: str) -> pl.Expr:
    """Length in hours of the local day `day` in `tz`: 24, or 23 / 25 on DST change days."""

    def midnight(d: pl.Expr) -> pl.Expr:
        # A midnight that does not exist (a DST change at 00:00) falls back to 24 h below.
        return d.cast(pl.Datetime("us")).dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")

    hours = (midnight(day + timedelta(days=1)) - midnight(day)).dt.total_microseconds() / 3.6e9
    return hours.fill_null(24.0)


def with_transformer_rating(daily: pl.DataFrame, transformers: pl.DataFrame, *, power_factor: float) -> pl.DataFrame:
    """kva_rating as of the day, peak kVA at the given power factor, and utilization."""
    rated = as_of_join(
        daily,
        transformers,
        left_on="transformer_id",
        right_on="transformer_id",
        date_col="load_date",
        columns={"kva_rating": "kva_rating"},
    )
    return rated.with_columns((pl.col("peak_kw") / power_factor).alias("peak_kva")).with_columns(
        (pl.col("peak_kva") / pl.col("kva_rating")).alias("utilization")
    )
