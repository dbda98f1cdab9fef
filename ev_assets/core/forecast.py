"""Forecast of transformer overload as EVs keep arriving: charging behavior learned from this
utility's sessions, an adoption curve per feeder, and a seeded Monte Carlo of each transformer's
coincident 15-minute peak per future period. Pure polars and numpy (no Dagster, no database).

Behavior (`learn_behavior`). From trusted complete sessions only (no quality flags: the load's
rule, `load_profile`): each EV (a premise; its meter without one) gets the charger level of its
median ChargeW (`premise_profile.charger_level`). Per level, day type (weekday / weekend, of the
session's local start date) and season (meteorological, by month: winter = Dec-Feb ...):

- sessions per EV-day = sessions / EV-days, where an EV's EV-days are *every* local day from its
  first-seen date (its first trusted session) to the end of the history, charging or not. (Counting
  only the days it charged would make every EV charge every day.)
- the sessions themselves, as an empirical pool: local plug-in minute, energy, ChargeW, and the
  15-minute load shape of the planning tables (`load_profile.load_until_and_kw`: ChargeW until the
  energy is delivered, then idle). The Monte Carlo resamples this pool (a bootstrap), so no
  distribution family is assumed; `behavior_table` summarises it by plug-in hour with sample sizes.

Adoption (`fit_adoption`). The share of a feeder's premises with an EV (first seen by t) follows a
logistic S(t) = saturation / (1 + exp(-k (t - t0))), t in decimal years. The saturation is a
scenario (settings: a few years of early adoption cannot identify the ceiling); k and t0 are fitted
by weighted least squares on logit(S / saturation) of the month-end shares, a utility-wide fit
first, then per feeder shrunk toward it (a ridge prior worth `prior_evs` EVs: a feeder with few EVs
follows the utility, one with many its own history).

Overload (`overload_forecast`). Per transformer and period (a calendar year, or a month in the
backtest), the EVs at the period's end are the EVs seen now plus Binomial(premises without one,
p_new), p_new = (S(end) - S(now)) / (1 - S(now)) of its feeder: EVs placed on premises in
proportion to the adoption model. Each transformer has EV slots (`transformer_slots`): first its own
EVs (seen on it by now; each keeps its charger, plug-in habit and rate), then observed EVs drawn at
random for those still to come. A library of simulated days per transformer (`transformer_peak_library`)
gives, per number of EVs n (the first n slots) and season x day type, the sorted daily EV peaks and
the daily peaks of EV + base load (the base load of the aging model: per-unit profile by local hour x
scale x rating; EV kVA = kW / power factor). The period's peak is the largest of its days' peaks: for
each transformer x draw, n is drawn, then for each season x day type with d days in the period the
maximum of d daily peaks is drawn by its inverse CDF (the empirical quantile at u^(1/d)), and the
period peak is the largest of those. Everything is numpy arrays of transformers x draws (the library:
chunks of transformers x days x slots x 96); the only loops are over periods, season x day type (8)
and chunks of transformers.

Managed charging: a share of sessions starts at a uniform time in an off-peak window instead of
its own (a session already starting inside the window is left alone). Years deferred = first year
with P(exceed threshold) >= 50 % managed minus unmanaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from ev_assets.core import load_profile
from ev_assets.core.premise_profile import charger_level

LEVELS = ("level_1", "level_2", "dc")
DAY_TYPES = ("weekday", "weekend")
SEASONS = ("winter", "spring", "summer", "fall")
COMBOS = tuple((s, d) for s in SEASONS for d in DAY_TYPES)
INTERVALS_PER_DAY = 96
MINUTES_PER_DAY = 1440


def season_of(day: pl.Expr) -> pl.Expr:
    """Meteorological season of a date: winter Dec-Feb, spring Mar-May, summer Jun-Aug, fall Sep-Nov."""
    return pl.lit(list(SEASONS), dtype=pl.List(pl.String)).list.get(((day.dt.month() % 12) // 3).cast(pl.Int64))


def day_type_of(day: pl.Expr) -> pl.Expr:
    return pl.when(day.dt.weekday() >= 6).then(pl.lit("weekend")).otherwise(pl.lit("weekday"))


def _combo_index(season: str, day_type: str) -> int:
    return SEASONS.index(season) * 2 + DAY_TYPES.index(day_type)


# --------------------------------------------------------------------------- behavior


@dataclass(frozen=True)
class Behavior:
    """What `learn_behavior` learned: the session pool, EV-days and rates, and the EVs' levels."""

    # One row per trusted session: ev_id, charger_level (the EV's), event_date, day_type, season,
    # start_minute (local), load_minutes, load_kw, energy_kwh, power_kw.
    sessions: pl.DataFrame
    # One row per charger_level x day_type x season: ev_days, session_count, sessions_per_ev_day.
    rates: pl.DataFrame
    # One row per EV (sorted by ev_id, as sessions): ev_id, charger_level, first_seen, session_count,
    # ev_days, sessions_per_ev_day (its own, shrunk toward its level's), _pool_first / _pool_count
    # (its rows in sessions).
    evs: pl.DataFrame
    history_end: date | None


def trusted_complete(sessions: pl.DataFrame) -> pl.DataFrame:
    """Complete sessions that carry no quality flag (the load's rule) and have a positive length."""
    out = sessions.filter((pl.col("status") == "complete") & (pl.col("end_time") > pl.col("start_time")))
    if "quality_flags" in out.columns:
        out = out.filter(pl.col("quality_flags").is_null())
    return out


def learn_behavior(
    sessions: pl.DataFrame,
    *,
    tz: str,
    history_end: date | None = None,
    load_shape: str = load_profile.DEFAULT_LOAD_SHAPE,
    idle_ratio: float = load_profile.DEFAULT_IDLE_RATIO,
) -> Behavior:
    """`sessions`: ev_charging_sessions rows (status, start_time, end_time, charge_w, energy_wh,
    meter_id, premise_id, optional quality_flags). `history_end`: the last local day of the history
    (default: the latest local start date of any session, trusted or not)."""
    local_start = pl.col("start_time").dt.convert_time_zone(tz)
    if history_end is None and sessions.height:
        history_end = sessions.select(local_start.dt.date().max()).item()
    trusted = trusted_complete(sessions)
    if "average_kw" not in trusted.columns:
        hours = (pl.col("end_time") - pl.col("start_time")).dt.total_microseconds() / 3.6e9
        trusted = trusted.with_columns((pl.col("energy_wh") / 1000 / hours).alias("average_kw"))
    until, kw = load_profile.load_until_and_kw(load_shape, idle_ratio)
    ev_id = pl.coalesce(pl.col("premise_id"), pl.col("meter_id")) if "premise_id" in trusted.columns else "meter_id"
    pool = trusted.with_columns(
        pl.lit(None, dtype=pl.String).alias("premise_id")
        if "premise_id" not in trusted.columns
        else pl.col("premise_id")
    ).select(
        ev_id.alias("ev_id") if isinstance(ev_id, pl.Expr) else pl.col(ev_id).alias("ev_id"),
        local_start.dt.date().alias("event_date"),
        (local_start.dt.hour().cast(pl.Int32) * 60 + local_start.dt.minute().cast(pl.Int32)).alias("start_minute"),
        ((until - pl.col("start_time")).dt.total_microseconds() / 6e7).clip(0, MINUTES_PER_DAY).alias("load_minutes"),
        kw.alias("load_kw"),
        (pl.col("energy_wh") / 1000).alias("energy_kwh"),
        (pl.col("charge_w") / 1000).alias("power_kw"),
    )
    pool = pool.filter(pl.col("event_date") <= history_end) if history_end is not None else pool
    evs = pool.group_by("ev_id").agg(
        charger_level((pl.col("power_kw") * 1000).median()).fill_null("level_2").alias("charger_level"),
        pl.col("event_date").min().alias("first_seen"),
    )
    pool = pool.join(evs.select("ev_id", "charger_level"), on="ev_id").with_columns(
        day_type_of(pl.col("event_date")).alias("day_type"), season_of(pl.col("event_date")).alias("season")
    )
    rates = _rates(pool, evs, history_end)
    return Behavior(
        sessions=pool.sort("ev_id", "event_date"),
        rates=rates,
        evs=_ev_rates(pool, evs, rates, history_end),
        history_end=history_end,
    )


# EV-days of the level's rate an EV's own rate is shrunk with: an EV seen for a few days has the
# level's rate more than its own (one session in its first 3 days is not 1 every 3 days for life).
EV_RATE_PRIOR_DAYS = 14.0


def _ev_rates(pool: pl.DataFrame, evs: pl.DataFrame, rates: pl.DataFrame, history_end: date | None) -> pl.DataFrame:
    """Per EV (sorted by ev_id, as the pool): ev_days (first seen to history_end), session_count,
    sessions_per_ev_day (shrunk toward its level's), and where its sessions start in the pool."""
    overall = rates.group_by("charger_level").agg(
        pl.when(pl.col("ev_days").sum() > 0)
        .then(pl.col("session_count").sum() / pl.col("ev_days").sum())
        .alias("_level_rate")
    )
    counts = pool.group_by("ev_id").agg(pl.len().cast(pl.Int64).alias("session_count"))
    end = history_end or date.today()
    out = (
        evs.join(counts, on="ev_id", how="left")
        .join(overall, on="charger_level", how="left")
        .sort("ev_id")
        .with_columns(((pl.lit(end) - pl.col("first_seen")).dt.total_days() + 1).cast(pl.Int64).alias("ev_days"))
        .with_columns(
            (
                (pl.col("session_count") + EV_RATE_PRIOR_DAYS * pl.col("_level_rate").fill_null(0.0))
                / (pl.col("ev_days") + EV_RATE_PRIOR_DAYS)
            ).alias("sessions_per_ev_day"),
            (pl.col("session_count").cum_sum() - pl.col("session_count")).alias("_pool_first"),
            pl.col("session_count").alias("_pool_count"),
        )
        .drop("_level_rate")
    )
    return out


def _rates(pool: pl.DataFrame, evs: pl.DataFrame, history_end: date | None) -> pl.DataFrame:
    """Sessions per EV-day by level, day type and season. EVs present on a day = EVs first seen on
    or before it (each EV counts every day from its first-seen date to history_end)."""
    grid = pl.DataFrame(
        [(lv, d, s) for lv in LEVELS for d in DAY_TYPES for s in SEASONS],
        schema={"charger_level": pl.String, "day_type": pl.String, "season": pl.String},
        orient="row",
    )
    if evs.is_empty() or history_end is None:
        return grid.with_columns(
            pl.lit(0, dtype=pl.Int64).alias("ev_days"),
            pl.lit(0, dtype=pl.Int64).alias("session_count"),
            pl.lit(None, dtype=pl.Float64).alias("sessions_per_ev_day"),
        )
    first = evs["first_seen"].min()
    calendar = pl.DataFrame({"day": pl.date_range(first, history_end, "1d", eager=True)})
    new_per_day = evs.group_by("first_seen", "charger_level").agg(pl.len().alias("new"))
    present = (
        calendar.join(pl.DataFrame({"charger_level": list(LEVELS)}), how="cross")
        .join(new_per_day, left_on=["day", "charger_level"], right_on=["first_seen", "charger_level"], how="left")
        .sort("charger_level", "day")
        .with_columns(pl.col("new").fill_null(0).cum_sum().over("charger_level").alias("present"))
        .with_columns(day_type_of(pl.col("day")).alias("day_type"), season_of(pl.col("day")).alias("season"))
    )
    ev_days = present.group_by("charger_level", "day_type", "season").agg(pl.col("present").sum().alias("ev_days"))
    counts = pool.group_by("charger_level", "day_type", "season").agg(pl.len().alias("session_count"))
    on = ["charger_level", "day_type", "season"]
    return (
        grid.join(ev_days, on=on, how="left")
        .join(counts, on=on, how="left")
        .with_columns(
            pl.col("ev_days").fill_null(0).cast(pl.Int64), pl.col("session_count").fill_null(0).cast(pl.Int64)
        )
        .with_columns(
            pl.when(pl.col("ev_days") > 0)
            .then(pl.col("session_count") / pl.col("ev_days"))
            .alias("sessions_per_ev_day")
        )
        .sort(on)
    )


def behavior_table(behavior: Behavior) -> pl.DataFrame:
    """The learned behavior as a table (ev_charging_behavior): one row per charger level, day type,
    season and local plug-in hour with sessions, with the distributions of energy and power of the
    sessions plugged in that hour and the group's EV-days and sessions per EV-day."""
    on = ["charger_level", "day_type", "season"]
    pool = behavior.sessions.with_columns((pl.col("start_minute") // 60).cast(pl.Int64).alias("plug_in_hour"))
    hourly = pool.group_by(*on, "plug_in_hour").agg(
        pl.len().cast(pl.Int64).alias("session_count"),
        pl.col("energy_kwh").mean().alias("energy_kwh_mean"),
        pl.col("energy_kwh").quantile(0.1, "linear").alias("energy_kwh_p10"),
        pl.col("energy_kwh").quantile(0.5, "linear").alias("energy_kwh_p50"),
        pl.col("energy_kwh").quantile(0.9, "linear").alias("energy_kwh_p90"),
        pl.col("power_kw").quantile(0.1, "linear").alias("power_kw_p10"),
        pl.col("power_kw").quantile(0.5, "linear").alias("power_kw_p50"),
        pl.col("power_kw").quantile(0.9, "linear").alias("power_kw_p90"),
        pl.col("load_minutes").mean().alias("charging_minutes_mean"),
    )
    rates = behavior.rates.rename({"session_count": "group_session_count"})
    return (
        hourly.join(rates, on=on, how="left")
        .with_columns((pl.col("session_count") / pl.col("group_session_count")).alias("plug_in_share"))
        .sort(*on, "plug_in_hour")
    )


# --------------------------------------------------------------------------- adoption


@dataclass(frozen=True)
class AdoptionFit:
    """Per feeder: premises, evs, rate_per_year (k), midpoint_year (t0), saturation, own_weight
    (its data's share of the fit against the utility prior); `utility`: the utility-wide (k, t0)."""

    feeders: pl.DataFrame
    utility_rate_per_year: float
    utility_midpoint_year: float
    saturation: float
    as_of: date

    def share(self, feeder_ids: np.ndarray | pl.Series, when: date) -> np.ndarray:
        """Modelled share of premises with an EV on `when`, per feeder id (unknown: the utility's)."""
        t = decimal_year(when)
        ids = pl.DataFrame({"feeder_id": pl.Series(feeder_ids, dtype=pl.String)})
        params = ids.join(
            self.feeders.select("feeder_id", "rate_per_year", "midpoint_year"), on="feeder_id", how="left"
        )
        k = params["rate_per_year"].fill_null(self.utility_rate_per_year).to_numpy()
        t0 = params["midpoint_year"].fill_null(self.utility_midpoint_year).to_numpy()
        return logistic(t, self.saturation, k, t0)


def logistic(t: float | np.ndarray, saturation: float, k: float | np.ndarray, t0: float | np.ndarray) -> np.ndarray:
    return saturation / (1.0 + np.exp(-np.asarray(k) * (np.asarray(t) - np.asarray(t0))))


def decimal_year(day: date) -> float:
    start = date(day.year, 1, 1)
    return day.year + (day - start).days / (date(day.year + 1, 1, 1) - start).days


MIN_RATE_PER_YEAR = 0.05  # a feeder whose fit shows no growth still grows (slowly): k is floored


def fit_adoption(
    first_seen: pl.DataFrame,
    premises: pl.DataFrame,
    *,
    saturation: float,
    as_of: date,
    prior_evs: float = 10.0,
    rate_multiplier: float = 1.0,
) -> AdoptionFit:
    """`first_seen`: premise_id, feeder_id, first_seen (date; e.g. premise_ev_profile's
    first_charging_day); `premises`: premise_id, feeder_id (every premise, EV or not). Fitted on the
    month-end shares up to `as_of`; `rate_multiplier` scales the fitted k (a scenario)."""
    if not 0 < saturation <= 1:
        raise ValueError(f"saturation must lie in (0, 1]; got {saturation}")
    seen = first_seen.filter(pl.col("first_seen") <= as_of).drop_nulls("feeder_id")
    counts = (
        premises.drop_nulls("feeder_id").group_by("feeder_id").agg(pl.col("premise_id").n_unique().alias("premises"))
    )
    if seen.is_empty():
        raise ValueError("fit_adoption needs at least one EV first seen by as_of")
    first_month = seen["first_seen"].min().replace(day=1)
    month_ends = [d - timedelta(days=1) for d in pl.date_range(first_month, as_of, "1mo", eager=True).to_list()[1:]]
    month_ends.append(as_of)
    months = pl.DataFrame({"month_end": month_ends}).with_columns(
        pl.col("month_end").map_elements(decimal_year, return_dtype=pl.Float64).alias("t")
    )
    new = seen.group_by("feeder_id", "first_seen").agg(pl.len().alias("new")).sort("first_seen")
    # Cumulative EVs per feeder at each month end (an as-of join on the cumulative count).
    cumulative = new.with_columns(pl.col("new").cum_sum().over("feeder_id").alias("evs")).sort("first_seen")
    points = (
        months.join(counts.select("feeder_id"), how="cross")
        .sort("month_end")
        .join_asof(
            cumulative,
            left_on="month_end",
            right_on="first_seen",
            by="feeder_id",
            strategy="backward",
            check_sortedness=False,
        )
        .with_columns(pl.col("evs").fill_null(0))
        .join(counts, on="feeder_id")
    )
    n_points = months.height

    def prepared(frame: pl.DataFrame) -> pl.DataFrame:
        # logit of the share over the saturation, smoothed (+0.5 EV) so a zero count has a logit;
        # weight ~ the EVs behind the point (the logit's variance is about 1/count), spread over
        # the months so the total weight is about the feeder's EVs, comparable with prior_evs.
        share = (pl.col("evs") + 0.5) / (pl.col("premises") + 1)
        ratio = (share / saturation).clip(1e-6, 1 - 1e-6)
        return frame.with_columns((ratio / (1 - ratio)).log().alias("y"), ((pl.col("evs") + 0.5) / n_points).alias("w"))

    utility = prepared(points.group_by("month_end", "t").agg(pl.col("evs").sum(), pl.col("premises").sum()))
    k_u, a_u, xbar_u = _weighted_line(utility["t"].to_numpy(), utility["y"].to_numpy(), utility["w"].to_numpy())
    k_u = max(k_u, MIN_RATE_PER_YEAR)
    var_x = float(np.var(months["t"].to_numpy())) or 1.0
    feeders = (
        prepared(points)
        .group_by("feeder_id")
        .agg(
            pl.col("premises").first(),
            pl.col("evs").max().alias("evs"),
            pl.col("w").sum().alias("sw"),
            ((pl.col("w") * pl.col("t")).sum() / pl.col("w").sum()).alias("xbar"),
            (pl.col("w") * pl.col("y")).sum().alias("swy"),
            pl.col("t"),
            pl.col("y"),
            pl.col("w"),
        )
        .explode("t", "y", "w")
        .group_by("feeder_id", "premises", "evs", "sw", "xbar", "swy")
        .agg(
            (pl.col("w") * (pl.col("t") - pl.col("xbar")) * pl.col("y")).sum().alias("sxy"),
            (pl.col("w") * (pl.col("t") - pl.col("xbar")) ** 2).sum().alias("sxx"),
        )
        # Ridge toward the utility's line: the level at the feeder's own centre and the slope,
        # each with the weight of prior_evs EVs (the slope's in units of the months' spread).
        .with_columns((a_u + k_u * (pl.col("xbar") - xbar_u)).alias("_a_prior"))
        .with_columns(
            ((pl.col("swy") + prior_evs * pl.col("_a_prior")) / (pl.col("sw") + prior_evs)).alias("_a"),
            ((pl.col("sxy") + prior_evs * var_x * k_u) / (pl.col("sxx") + prior_evs * var_x))
            .clip(lower_bound=MIN_RATE_PER_YEAR)
            .alias("_k"),
            (pl.col("sw") / (pl.col("sw") + prior_evs)).alias("own_weight"),
        )
        .select(
            "feeder_id",
            pl.col("premises").cast(pl.Int64),
            pl.col("evs").cast(pl.Int64),
            (pl.col("_k") * rate_multiplier).alias("rate_per_year"),
            (pl.col("xbar") - pl.col("_a") / pl.col("_k")).alias("midpoint_year"),
            pl.lit(saturation).alias("saturation"),
            "own_weight",
        )
        .sort("feeder_id")
    )
    return AdoptionFit(
        feeders=feeders,
        utility_rate_per_year=k_u * rate_multiplier,
        utility_midpoint_year=xbar_u - a_u / k_u,
        saturation=saturation,
        as_of=as_of,
    )


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted least squares y = a + k (x - x̄): (k, a, x̄)."""
    xbar = float((w * x).sum() / w.sum())
    a = float((w * y).sum() / w.sum())
    sxx = float((w * (x - xbar) ** 2).sum())
    k = float((w * (x - xbar) * y).sum() / sxx) if sxx > 0 else 0.0
    return k, a, xbar


def parse_scenarios(text: str) -> dict[str, tuple[float, float]]:
    """`low:0.3:0.7;base:0.5:1.0` -> {name: (saturation, rate multiplier)}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        fields = [f.strip() for f in part.split(":")]
        if len(fields) != 3:
            raise ValueError(f"adoption scenario {part!r}: expected name:saturation:rate_multiplier")
        name, saturation, multiplier = fields[0], float(fields[1]), float(fields[2])
        if not name or not 0 < saturation <= 1 or multiplier <= 0:
            raise ValueError(f"adoption scenario {part!r}: saturation in (0, 1], multiplier > 0")
        out[name] = (saturation, multiplier)
    if not out:
        raise ValueError("at least one adoption scenario is needed")
    return out


def parse_window(text: str) -> tuple[int, int]:
    """`22:00-06:00` -> (start minute, length in minutes); the window may wrap midnight."""
    try:
        a, b = (p.strip() for p in text.split("-"))
        start = int(a[:2]) * 60 + int(a[3:5])
        end = int(b[:2]) * 60 + int(b[3:5])
    except (ValueError, IndexError) as error:
        raise ValueError(f"window {text!r}: expected hh:mm-hh:mm") from error
    length = (end - start) % MINUTES_PER_DAY
    if not (0 <= start < MINUTES_PER_DAY) or length == 0:
        raise ValueError(f"window {text!r}: start and end differ, within 00:00-24:00")
    return start, length


# --------------------------------------------------------------------------- the day library


def simulate_days(
    behavior: Behavior,
    combo: int,
    slots: np.ndarray,
    *,
    days: int,
    seed: int,
    managed_share: float = 0.0,
    managed_window: tuple[int, int] = (22 * 60, 8 * 60),
) -> np.ndarray:
    """`days` simulated days of season x day type COMBOS[combo] for each row of EV slots
    (`transformer_slots`: a transformer's), shape (rows, days, slots + 1, 96): the summed EV kW of the first n slots in
    each 15-minute interval. Each slot is an observed EV (a bootstrap of EVs, not of sessions: the
    charger, the plug-in habit and the rate stay together): on each day it charges with its own
    probability (its sessions per EV-day, times the season x day type factor of its level, at most
    one session a day, the simulator's and the pairing's cap) one of its own sessions. Load past
    midnight wraps onto the same day's morning (the day before is a day like it). Seeded by
    (seed, combo)."""
    replicates, max_evs = slots.shape
    rng = np.random.default_rng([seed, combo])
    # float32: the library is memory-bound, and kW to 7 digits is plenty.
    out = np.zeros((replicates, days, max_evs + 1, INTERVALS_PER_DAY), dtype=np.float32)
    pool = behavior.sessions
    if max_evs == 0 or pool.is_empty():
        return out
    evs = behavior.evs
    rate = (evs["sessions_per_ev_day"] * _combo_factor(behavior, evs["charger_level"], combo)).clip(0, 1).to_numpy()
    first, count = evs["_pool_first"].to_numpy(), evs["_pool_count"].to_numpy()
    slot_rate = rate[slots][:, None, :]  # (replicates, 1, slots)
    charging = rng.random((replicates, days, max_evs)) < slot_rate
    rep_index, day_index, slot_index = np.nonzero(charging)
    ev = slots[rep_index, slot_index]
    pick = first[ev] + np.minimum((rng.random(len(ev)) * count[ev]).astype(np.int64), count[ev] - 1)
    start = pool["start_minute"].to_numpy().astype(float)[pick]
    minutes = pool["load_minutes"].to_numpy()[pick]
    kw = pool["load_kw"].to_numpy()[pick]
    if managed_share > 0:
        window_start, window_length = managed_window
        outside = (start - window_start) % MINUTES_PER_DAY >= window_length
        moved = outside & (rng.random(len(start)) < managed_share)
        start = np.where(moved, (window_start + rng.random(len(start)) * window_length) % MINUTES_PER_DAY, start)
    per_slot = np.zeros((replicates * days * max_evs, INTERVALS_PER_DAY), dtype=np.float32)
    flat = np.ravel_multi_index((rep_index, day_index, slot_index), (replicates, days, max_evs))
    per_slot[flat] = _overlap_minutes(start, start + minutes) * (kw / 15.0).astype(np.float32)[:, None]
    np.cumsum(per_slot.reshape(replicates, days, max_evs, INTERVALS_PER_DAY), axis=2, out=out[:, :, 1:])
    return out


def _combo_factor(behavior: Behavior, levels: pl.Series, combo: int) -> pl.Series:
    """Per EV (its level): the level's sessions per EV-day in season x day type `combo` over its
    rate across the whole history (1 where either is unknown)."""
    season, day_type = COMBOS[combo]
    overall = behavior.rates.group_by("charger_level").agg(
        (pl.col("session_count").sum() / pl.col("ev_days").sum()).alias("_all")
    )
    factors = (
        behavior.rates.filter((pl.col("season") == season) & (pl.col("day_type") == day_type))
        .join(overall, on="charger_level")
        .select("charger_level", (pl.col("sessions_per_ev_day") / pl.col("_all")).alias("_factor"))
    )
    return (
        pl.DataFrame({"charger_level": levels})
        .join(factors, on="charger_level", how="left", maintain_order="left")["_factor"]
        .fill_nan(None)
        .fill_null(1.0)
    )


def _overlap_minutes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Minutes of [start, end) in each 15-minute interval of the day, the part past midnight
    wrapped onto the morning: shape (sessions, 96), float32. The minutes charged by each interval
    boundary, differenced: two passes over the matrix instead of one per min / max / clip."""
    bounds = (np.arange(INTERVALS_PER_DAY + 1) * 15.0).astype(np.float32)
    start32 = start.astype(np.float32)[:, None]
    length = (end - start).astype(np.float32)[:, None]
    charged = np.clip(bounds[None, :] - start32, 0, length)
    overlap = np.diff(charged, axis=1)
    past = np.flatnonzero(end > MINUTES_PER_DAY)
    if len(past):
        wrapped = np.clip(bounds[None, :] + MINUTES_PER_DAY - start32[past], 0, length[past])
        overlap[past] += np.diff(wrapped, axis=1)
    return overlap


@dataclass(frozen=True)
class PeakLibrary:
    """Sorted simulated daily peaks per transformer: ev_kw (EV load, kW) and total_kva (EV + base
    load), each (combos, transformers, slots + 1, days)."""

    ev_kw: np.ndarray
    total_kva: np.ndarray


def transformer_slots(behavior: Behavior, transformers: pl.DataFrame, *, max_evs: int, seed: int) -> np.ndarray:
    """Per transformer, the observed EVs (rows of behavior.evs) of its EV slots, shape (transformers,
    max_evs): first its own EVs (`ev_ids`: the premises with an EV seen by as_of; an EV keeps its
    charger and habits), then EVs drawn at random from all observed EVs for the EVs still to come."""
    rng = np.random.default_rng([seed, 1_000_003])
    slots = rng.integers(0, max(behavior.evs.height, 1), size=(transformers.height, max_evs))
    if "ev_ids" not in transformers.columns or max_evs == 0:
        return slots
    row_of = behavior.evs.select(pl.col("ev_id"), pl.int_range(pl.len()).alias("_row"))
    known = (
        transformers.select(pl.int_range(pl.len()).alias("_t"), "ev_ids")
        .explode("ev_ids")
        .drop_nulls("ev_ids")
        .with_columns(pl.int_range(pl.len()).over("_t").alias("_slot"))
        .join(row_of, left_on="ev_ids", right_on="ev_id", how="inner")
        .filter(pl.col("_slot") < max_evs)
    )
    slots[known["_t"].to_numpy(), known["_slot"].to_numpy()] = known["_row"].to_numpy()
    return slots


# Transformers whose days are simulated at once (bounds memory: chunk x days x slots x 96 floats).
LIBRARY_CHUNK_TRANSFORMERS = 256


def transformer_peak_library(
    behavior: Behavior,
    slots: np.ndarray,
    *,
    days: int,
    seed: int,
    base_pu: np.ndarray,
    power_factor: float,
    rating: np.ndarray,
    scale: np.ndarray,
    width: np.ndarray | None = None,
    managed_share: float = 0.0,
    managed_window: tuple[int, int] = (22 * 60, 8 * 60),
) -> PeakLibrary:
    """Sorted simulated daily peaks per transformer (its own slots, `transformer_slots`), season x
    day type and EV count: ev_kw and total_kva, each (combos, transformers, slots + 1, days); the
    total with the transformer's own base load (base_pu x scale x rating; rating 0: left 0)."""
    n_t, max_evs = slots.shape
    if width is None:
        width = np.full(n_t, max_evs)
    ev_kw = np.zeros((len(COMBOS), n_t, max_evs + 1, days), dtype=np.float32)
    total = np.zeros((len(COMBOS), n_t, max_evs + 1, days), dtype=np.float32)
    # Chunks of transformers of similar width (the EV counts they can reach): each simulates only
    # that many slots; counts beyond a transformer's width are never drawn.
    order = np.argsort(width, kind="stable")
    for first in range(0, n_t, LIBRARY_CHUNK_TRANSFORMERS):
        part = order[first : first + LIBRARY_CHUNK_TRANSFORMERS]
        w = int(width[part].max())
        base = (base_pu[None, :] * (scale[part] * rating[part])[:, None])[:, None, None, :].astype(np.float32)
        for c in range(len(COMBOS)):
            load = simulate_days(
                behavior,
                c,
                slots[part, :w],
                days=days,
                seed=seed + 7919 * first,
                managed_share=managed_share,
                managed_window=managed_window,
            )
            ev_kw[c, part, : w + 1] = np.sort(load.max(axis=3), axis=1).transpose(0, 2, 1)
            kva = (load * np.float32(1 / power_factor) + base).max(axis=3)
            total[c, part, : w + 1] = np.where(rating[part, None, None] > 0, np.sort(kva, axis=1), 0.0).transpose(
                0, 2, 1
            )
    return PeakLibrary(ev_kw, total)


def interval_hours() -> np.ndarray:
    """Local hour of each 15-minute interval of a day (the base profile is hourly)."""
    return np.arange(INTERVALS_PER_DAY) // 4


# --------------------------------------------------------------------------- the forecast


def period_day_counts(first: date, last: date) -> np.ndarray:
    """Days of each season x day type (COMBOS order) in first..last."""
    days = pl.DataFrame({"day": pl.date_range(first, last, "1d", eager=True)}).with_columns(
        season_of(pl.col("day")).alias("season"), day_type_of(pl.col("day")).alias("day_type")
    )
    counts = np.zeros(len(COMBOS), dtype=np.int64)
    for season, day_type, n in days.group_by("season", "day_type").len().iter_rows():
        counts[_combo_index(season, day_type)] = n
    return counts


@dataclass(frozen=True)
class ForecastParameters:
    draws: int = 500
    seed: int = 28
    library_days: int = 60
    base_load_pu: tuple[float, ...] = ()
    base_load_scale: float = 1.0
    power_factor: float = 0.9
    planning_threshold: float = 1.0
    managed_share: float = 0.5
    managed_window: tuple[int, int] = (22 * 60, 8 * 60)


def yearly_periods(as_of: date, years: int) -> list[tuple[int, date, date]]:
    """The `years` calendar years after as_of's: (year, 1 Jan, 31 Dec)."""
    return [(y, date(y, 1, 1), date(y, 12, 31)) for y in range(as_of.year + 1, as_of.year + 1 + years)]


def monthly_periods(first: date, months: int) -> list[tuple[int, date, date]]:
    """`months` calendar months from first's month: (yyyymm, first day, last day)."""
    out = []
    start = first.replace(day=1)
    for _ in range(months):
        following = (start + timedelta(days=32)).replace(day=1)
        out.append((start.year * 100 + start.month, start, following - timedelta(days=1)))
        start = following
    return out


def overload_forecast(
    behavior: Behavior,
    adoption: AdoptionFit,
    transformers: pl.DataFrame,
    periods: list[tuple[int, date, date]],
    parameters: ForecastParameters,
) -> pl.DataFrame:
    """One row per transformer and period. `transformers`: transformer_id, feeder_id, kva_rating
    (null: unrated, no overload figures), premises, evs_now, optional base_load_scale (null: the
    parameters'). Columns: period, expected_evs, ev_peak_kw_p50/_p90, peak_kva_p50/_p90,
    p_exceed_rating, p_exceed_threshold, and the same under managed charging (*_managed)."""
    p = parameters
    base_pu = np.asarray(p.base_load_pu or _default_base(), dtype=float)[interval_hours()]
    t = transformers.with_columns(
        pl.col("premises").cast(pl.Int64),
        pl.col("evs_now").fill_null(0).cast(pl.Int64),
        (
            pl.col("base_load_scale").fill_null(p.base_load_scale)
            if "base_load_scale" in transformers.columns
            else pl.lit(p.base_load_scale)
        )
        .cast(pl.Float64)
        .alias("_scale"),
        pl.col("kva_rating").cast(pl.Float64),
    )
    premises = t["premises"].to_numpy()
    evs_now = t["evs_now"].to_numpy()
    max_evs = int(max(premises.max(initial=0), evs_now.max(initial=0)))
    rating = t["kva_rating"].to_numpy()
    rated = np.isfinite(rating) & (rating > 0)
    slots = transformer_slots(behavior, t, max_evs=max_evs, seed=p.seed)
    common = dict(
        days=p.library_days,
        seed=p.seed,
        base_pu=base_pu,
        power_factor=p.power_factor,
        rating=np.where(rated, rating, 0.0),
        scale=t["_scale"].to_numpy(),
        width=np.maximum(premises, evs_now),
    )
    libraries = {
        "": transformer_peak_library(behavior, slots, **common),
        "_managed": transformer_peak_library(
            behavior, slots, **common, managed_share=p.managed_share, managed_window=p.managed_window
        ),
    }
    rng = np.random.default_rng(p.seed + 1)
    feeder_ids = t["feeder_id"].to_numpy()
    share_now = adoption.share(feeder_ids, adoption.as_of)
    rows = []
    days_axis = p.library_days
    own = np.broadcast_to(np.arange(t.height)[:, None], (t.height, p.draws))
    for label, first, last in periods:
        share_end = adoption.share(feeder_ids, last)
        p_new = np.clip((share_end - share_now) / np.maximum(1 - share_now, 1e-9), 0, 1)
        without = np.maximum(premises - evs_now, 0)
        n = evs_now[:, None] + rng.binomial(without[:, None], p_new[:, None], size=(t.height, p.draws))
        counts = period_day_counts(first, last)
        out = {"period": label, "expected_evs": evs_now + without * p_new}
        for suffix, library in libraries.items():
            ev, total = library.ev_kw, library.total_kva
            ev_peak = np.zeros((t.height, p.draws))
            total_peak = np.zeros((t.height, p.draws))
            for c in np.flatnonzero(counts):
                # The largest of d iid daily peaks: the empirical quantile at u^(1/d).
                u = rng.random((t.height, p.draws))
                index = np.minimum((u ** (1.0 / counts[c]) * days_axis).astype(np.int64), days_axis - 1)
                ev_peak = np.maximum(ev_peak, ev[c][own, n, index])
                total_peak = np.maximum(total_peak, total[c][own, n, index])
            out[f"ev_peak_kw_p50{suffix}"] = np.quantile(ev_peak, 0.5, axis=1)
            out[f"ev_peak_kw_p90{suffix}"] = np.quantile(ev_peak, 0.9, axis=1)
            limit = np.where(rated, rating, np.inf)[:, None]
            out[f"peak_kva_p50{suffix}"] = np.where(rated, np.quantile(total_peak, 0.5, axis=1), np.nan)
            out[f"peak_kva_p90{suffix}"] = np.where(rated, np.quantile(total_peak, 0.9, axis=1), np.nan)
            out[f"p_exceed_rating{suffix}"] = np.where(rated, (total_peak > limit).mean(axis=1), np.nan)
            out[f"p_exceed_threshold{suffix}"] = np.where(
                rated, (total_peak > limit * p.planning_threshold).mean(axis=1), np.nan
            )
        rows.append(
            t.select("transformer_id", "feeder_id", "kva_rating", "premises", "evs_now").with_columns(
                *[
                    pl.Series(k, v) if isinstance(v, np.ndarray) else pl.lit(v, dtype=pl.Int64).alias(k)
                    for k, v in out.items()
                ]
            )
        )
    frame = pl.concat(rows)
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None))


def _default_base() -> tuple[float, ...]:
    from ev_assets.core.transformer_aging import DEFAULT_BASE_LOAD_PU

    return DEFAULT_BASE_LOAD_PU


def with_first_years(forecast: pl.DataFrame) -> pl.DataFrame:
    """Per transformer (over its yearly rows, `period` = year): first_year_p10 / first_year_p50, the
    first year with P(exceed threshold) >= 10 % / 50 % (null: none within the horizon), the same
    under managed charging, and years_deferred = managed - unmanaged first_year_p50 (a managed
    transformer that never reaches 50 % within the horizon defers at least to the horizon's end + 1)."""
    horizon_end = forecast["period"].max()

    def first(column: str, level: float) -> pl.Expr:
        return pl.col("period").filter(pl.col(column) >= level).min()

    firsts = forecast.group_by("transformer_id").agg(
        first("p_exceed_threshold", 0.1).alias("first_year_p10"),
        first("p_exceed_threshold", 0.5).alias("first_year_p50"),
        first("p_exceed_threshold_managed", 0.5).alias("first_year_p50_managed"),
    )
    managed_or_after = pl.col("first_year_p50_managed").fill_null(pl.lit(horizon_end + 1))
    firsts = firsts.with_columns(
        pl.when(pl.col("first_year_p50").is_not_null())
        .then(managed_or_after - pl.col("first_year_p50"))
        .cast(pl.Int64)
        .alias("years_deferred")
    )
    return forecast.join(firsts, on="transformer_id", how="left")


# --------------------------------------------------------------------------- backtest


def observed_monthly_peaks(sessions: pl.DataFrame, *, tz: str, first: date, last: date) -> pl.DataFrame:
    """Per transformer and local month (yyyymm) of first..last: the largest 15-minute summed EV load
    of trusted complete sessions starting in the range (the planning tables' peak_kw)."""
    trusted = trusted_complete(sessions)
    if "average_kw" not in trusted.columns:
        hours = (pl.col("end_time") - pl.col("start_time")).dt.total_microseconds() / 3.6e9
        trusted = trusted.with_columns((pl.col("energy_wh") / 1000 / hours).alias("average_kw"))
    for column in ("feeder_id", "substation_id"):
        if column not in trusted.columns:
            trusted = trusted.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    local = pl.col("start_time").dt.convert_time_zone(tz).dt.date()
    trusted = trusted.filter(local.is_between(first, last))
    intervals = load_profile.interval_loads(trusted)
    local_interval = pl.col("interval_start").dt.convert_time_zone(tz)
    return (
        intervals.filter(local_interval.dt.date().is_between(first, last))
        .group_by("transformer_id", "interval_start")
        .agg(pl.col("kw").sum())
        .with_columns((local_interval.dt.year() * 100 + local_interval.dt.month()).cast(pl.Int64).alias("period"))
        .group_by("transformer_id", "period")
        .agg(pl.col("kw").max().alias("observed_peak_kw"))
    )


@dataclass(frozen=True)
class Calibration:
    transformer_months: int
    share_under_p50: float
    share_under_p90: float


def calibration(forecast: pl.DataFrame, observed: pl.DataFrame) -> tuple[Calibration, pl.DataFrame]:
    """Share of transformer-months whose observed EV peak lies under the forecast P50 / P90 (a tie
    counts half: a month with no charging at all on a transformer whose P50 is 0 is neither above
    nor below). Over the transformers with at least one EV at the cut-off (evs_now > 0): the others'
    peaks are mostly 0 = 0 and say nothing of the forecast's spread."""
    joined = (
        forecast.filter(pl.col("evs_now") > 0)
        .join(observed, on=["transformer_id", "period"], how="left")
        .with_columns(pl.col("observed_peak_kw").fill_null(0.0))
    )

    def under(column: str) -> pl.Expr:
        tol = 1e-9
        below = (pl.col("observed_peak_kw") < pl.col(column) - tol).cast(pl.Float64)
        tie = ((pl.col("observed_peak_kw") - pl.col(column)).abs() <= tol).cast(pl.Float64)
        return (below + 0.5 * tie).mean()

    if joined.is_empty():
        return Calibration(0, float("nan"), float("nan")), joined
    shares = joined.select(under("ev_peak_kw_p50").alias("p50"), under("ev_peak_kw_p90").alias("p90")).row(0)
    return Calibration(joined.height, float(shares[0]), float(shares[1])), joined


def transformer_inputs(
    service_points: pl.DataFrame, transformers: pl.DataFrame, evs_by_premise: pl.DataFrame, as_of: date
) -> pl.DataFrame:
    """Per transformer as of `as_of`: feeder_id, kva_rating, base_load_scale, premises (distinct
    premises of its service points in effect) and evs_now (those premises among `evs_by_premise`,
    premise_id of EVs first seen by as_of). Reference frames have effective_from / effective_to."""
    in_effect = (pl.col("effective_from") <= as_of) & (
        pl.col("effective_to").is_null() | (pl.col("effective_to") > as_of)
    )
    sp = service_points.filter(in_effect).select("premise_id", "transformer_id").unique()
    ev_premises = evs_by_premise.select("premise_id").unique().with_columns(pl.lit(1).alias("_ev"))
    per = (
        sp.join(ev_premises, on="premise_id", how="left")
        .group_by("transformer_id")
        .agg(
            pl.col("premise_id").n_unique().alias("premises"),
            pl.col("_ev").sum().fill_null(0).alias("evs_now"),
            pl.col("premise_id").filter(pl.col("_ev") == 1).sort().alias("ev_ids"),
        )
    )
    columns = ["transformer_id", "feeder_id", "kva_rating"] + (
        ["base_load_scale"] if "base_load_scale" in transformers.columns else []
    )
    return (
        transformers.filter(in_effect)
        .select(columns)
        .unique("transformer_id")
        .join(per, on="transformer_id", how="inner")
        .with_columns(pl.col("premises").cast(pl.Int64), pl.col("evs_now").cast(pl.Int64))
        .sort("transformer_id")
    )


@dataclass(frozen=True)
class Backtest:
    calibration: Calibration
    forecast: pl.DataFrame  # monthly rows with observed_peak_kw (the calibration's transformer-months)
    adoption: AdoptionFit
    behavior: Behavior


def premise_feeders(service_points: pl.DataFrame, transformers: pl.DataFrame, as_of: date) -> pl.DataFrame:
    """premise_id, transformer_id, feeder_id of every premise's service point in effect on as_of."""
    in_effect = (pl.col("effective_from") <= as_of) & (
        pl.col("effective_to").is_null() | (pl.col("effective_to") > as_of)
    )
    return (
        service_points.filter(in_effect)
        .select("premise_id", "transformer_id")
        .unique("premise_id", keep="last")
        .join(
            transformers.filter(in_effect).select("transformer_id", "feeder_id").unique("transformer_id"),
            on="transformer_id",
            how="left",
        )
    )


def first_seen_by_premise(behavior: Behavior, premises: pl.DataFrame) -> pl.DataFrame:
    """premise_id, feeder_id, first_seen of the learned EVs (ev_id = premise) on `premises`."""
    return behavior.evs.select(pl.col("ev_id").alias("premise_id"), "first_seen").join(
        premises.select("premise_id", "feeder_id"), on="premise_id", how="inner"
    )


def backtest(
    sessions: pl.DataFrame,
    service_points: pl.DataFrame,
    transformers: pl.DataFrame,
    *,
    tz: str,
    cutoff: date,
    months: int,
    parameters: ForecastParameters,
    saturation: float,
    rate_multiplier: float = 1.0,
    prior_evs: float = 10.0,
    load_shape: str = load_profile.DEFAULT_LOAD_SHAPE,
    idle_ratio: float = load_profile.DEFAULT_IDLE_RATIO,
) -> Backtest:
    """Fit behavior and adoption on the sessions starting up to `cutoff` (local date), forecast the
    `months` months after it, and compare with what the later sessions did (`calibration`)."""
    local_day = pl.col("start_time").dt.convert_time_zone(tz).dt.date()
    history = sessions.filter(local_day <= cutoff)
    behavior = learn_behavior(history, tz=tz, history_end=cutoff, load_shape=load_shape, idle_ratio=idle_ratio)
    premises = premise_feeders(service_points, transformers, cutoff)
    first_seen = first_seen_by_premise(behavior, premises)
    adoption = fit_adoption(
        first_seen, premises, saturation=saturation, as_of=cutoff, prior_evs=prior_evs, rate_multiplier=rate_multiplier
    )
    inputs = transformer_inputs(service_points, transformers, first_seen, cutoff)
    periods = monthly_periods(cutoff + timedelta(days=1), months)
    monthly = overload_forecast(behavior, adoption, inputs, periods, parameters)
    observed = observed_monthly_peaks(sessions, tz=tz, first=periods[0][1], last=periods[-1][2])
    result, joined = calibration(monthly, observed)
    return Backtest(result, joined, adoption, behavior)
