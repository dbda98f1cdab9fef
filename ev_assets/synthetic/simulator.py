"""EV Awareness agent simulator: charging sessions, their two feed messages, and the
payload files a landing folder receives.

The meter-resident agent sends two messages per charging session (spec, DOMAIN.md "The
feed"): a **start** message when charging starts (ChargeStartTime, ChargeW) and an
**end** message when it stops (ChargeEndTime, ChargeDuration, ChargeEnergy). Each record
also carries the identity fields as of the event date (the session's start date) and
ReceivedTime. The simulator keeps the truth it generated, one row per session, so that
the pipeline's pairing of messages into sessions can be checked against it.

Payload files (:func:`write_feed`)
----------------------------------
One file per ``file_minutes`` window of ReceivedTime that has messages, named
``ev_<window start as YYYYMMDDTHHMMSSZ>.json`` (names sort chronologically), written
atomically (``.tmp`` then rename) with its mtime set to the window's end. Content, one
record per line, in the spec's field order::

    {"EVChargingEvents": [
    {"ServicePointID":"5000000012","MeterID":"2000000006","MeterNumber":"9100000002",
     "ESN":"1.16.210.3.887097.27.28.9100000002","TransformerID":"4000000012-05694882",
     "PremiseID":"P1000000008","ReceivedTime":"2024-01-01T23:05:11.08Z",
     "ChargeStartTime":"2024-01-01T23:05:03.41Z","ChargeEndTime":null,"ChargeW":"6912.35",
     "ChargeDuration":null,"ChargeEnergy":null},
    ...
    ]}

All numbers are JSON strings (ChargeDuration is whole hours, at least 1, as the spec
documents); the other message type's fields are JSON null; timestamps are UTC with two
fractional digits and a ``Z``. A file holds ends of earlier sessions and starts of later
ones; messages received after the simulated span (ends of sessions still charging) are
written too, so the feed is complete for every simulated session.

Behaviour (figures from DOMAIN.md, "Figures for a realistic simulator", all in
:class:`SimulationConfig`): charger levels 1.4-19.2 kW with 7.2 kW most common; 12-13
sessions a month per EV; 16-20 kWh per session on average; arrivals rising from
mid-afternoon to a 19:00-21:00 local plateau; time-of-use EVs starting just after local
midnight (the "timer spike"). At most one session starts per EV per local day, and a
session that would start before the previous one ended (plus a gap to unplug and drive)
does not happen, so a meter's sessions never overlap.

Determinism: every random draw is a hash of (seed, service point, local day, purpose),
not a position in a random stream, so the EV population and each day's sessions do not
depend on which span is simulated: days 1-2 then 3-4 give exactly the sessions of days 1-4.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from ev_assets.core.reference_extracts import valid_on

UTC_US = pl.Datetime("us", "UTC")
CENTISECOND_US = 10_000
EPOCH = date(1970, 1, 1)

SESSION_COLUMNS = (
    "session_id",
    "meter_id",
    "meter_number",
    "esn",
    "service_point_id",
    "premise_id",
    "transformer_id",
    "start_time",
    "end_time",
    "charge_w",
    "energy_wh",
    "duration_h",
)
# The spec's record fields, in the spec's order.
FEED_FIELDS = (
    "ServicePointID",
    "MeterID",
    "MeterNumber",
    "ESN",
    "TransformerID",
    "PremiseID",
    "ReceivedTime",
    "ChargeStartTime",
    "ChargeEndTime",
    "ChargeW",
    "ChargeDuration",
    "ChargeEnergy",
)
MESSAGE_COLUMNS = ("message_type", *FEED_FIELDS)

# Home arrivals by local hour (DOMAIN.md: rising from mid-afternoon to a plateau around
# 19:00-21:00); relative weights, hour 0 first.
DEFAULT_ARRIVAL_HOUR_WEIGHTS = (
    0.5,
    0.3,
    0.2,
    0.2,
    0.2,
    0.3,  # 00-05 night
    0.6,
    0.8,
    1.0,
    1.0,
    1.0,
    1.2,  # 06-11 morning
    1.4,
    1.6,
    2.0,
    3.0,
    4.5,
    7.0,  # 12-17 rising from mid-afternoon
    9.0,
    10.0,
    10.0,
    9.5,
    6.0,
    3.0,  # 18-23 evening plateau, then falling
)


@dataclass(frozen=True)
class AdoptionCurve:
    """EVs arriving at homes over the simulated years: the share of homes with an EV on day t is
    saturation / (1 + exp(-rate_per_year (t - midpoint))), t in years. A home's hashed draw u (the
    one that decides whether it has an EV) fixes its adoption time, the t at which the curve reaches
    u: homes with u >= saturation never adopt. Later adopters shift from Level 1 toward Level 2: the
    Level 1 weights (chargers below 2 kW) are multiplied by exp(-level_1_decline_per_year x years
    after the midpoint) (at most 1)."""

    saturation: float = 0.5
    rate_per_year: float = 0.9
    midpoint: date = date(2026, 1, 1)
    level_1_decline_per_year: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.saturation <= 1 or self.rate_per_year <= 0:
            raise ValueError("saturation in (0, 1] and rate_per_year > 0")

    def adoption_day(self, u: np.ndarray) -> np.ndarray:
        """Epoch day each home adopts (inverse of the curve at u; u >= saturation: never, a huge day)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            years = -np.log(self.saturation / u - 1) / self.rate_per_year
        days = (self.midpoint - EPOCH).days + np.floor(years * 365.25)
        return np.where(u < self.saturation, days, np.iinfo(np.int64).max // 2).astype(np.int64)

    def share_on(self, day: date) -> float:
        years = (day - self.midpoint).days / 365.25
        return self.saturation / (1 + math.exp(-self.rate_per_year * years))


@dataclass(frozen=True)
class SimulationConfig:
    """Behaviour of the simulated EV population; defaults from DOMAIN.md."""

    ev_share: float = 0.2  # share of homes (service points) with an EV
    timezone: str = "America/New_York"  # local time for arrival behaviour and local days
    tou_share: float = 0.3  # share of EVs on a time-of-use rate (timer just after midnight)
    file_minutes: int = 5  # one payload file per this many minutes of ReceivedTime
    # Charger ratings (kW) and their shares: Level 1 1.4 (up to 1.8), Level 2 3.3, 6.0,
    # 7.2 (most common residential), 9.6, 11.5, rarely 19.2 (DOMAIN.md).
    charger_kw: tuple[float, ...] = (1.4, 1.8, 3.3, 6.0, 7.2, 9.6, 11.5, 19.2)
    charger_weights: tuple[float, ...] = (0.04, 0.02, 0.08, 0.12, 0.42, 0.16, 0.13, 0.03)
    # The car draws a little under the charger's rating, differently each session.
    power_draw_range: tuple[float, float] = (0.92, 1.0)
    sessions_per_month: float = 12.5  # DOMAIN.md: 12-13 a month per EV
    sessions_per_month_spread: float = 0.3  # each EV's own rate: mean * (1 +/- spread)
    energy_mean_wh: float = 18_000.0  # DOMAIN.md: about 16-20 kWh a session
    energy_mean_spread: float = 0.25  # each EV's own mean: mean * (1 +/- spread)
    energy_cv: float = 0.45  # session-to-session variation (lognormal)
    energy_min_wh: float = 500.0
    max_duration_h: float = 20.0  # energy is clipped so charging ends within this
    min_gap_minutes: float = 30.0  # unplug, drive and plug in again before a new session
    arrival_hour_weights: tuple[float, ...] = DEFAULT_ARRIVAL_HOUR_WEIGHTS
    tou_mean_delay_minutes: float = 5.0  # timer starts: exponential after midnight ...
    tou_window_minutes: float = 30.0  # ... cut at 00:30 local
    tou_evening_share: float = 0.1  # days a TOU EV is charged on arrival anyway
    # Network delay between the event and ReceivedTime: lognormal, seconds.
    delay_median_s: float = 8.0
    delay_sigma: float = 1.0
    delay_min_s: float = 0.5
    delay_max_s: float = 150.0
    # EVs arriving over time (None: the fixed population of ev_share, the default demo).
    adoption: AdoptionCurve | None = None
    # Another draw of the days of the same EV population (0: the default): the same homes, chargers
    # and habits, other days charged, start times and energies. What a "true probability" needs.
    realization: int = 0

    def __post_init__(self) -> None:
        if len(self.charger_kw) != len(self.charger_weights):
            raise ValueError("charger_kw and charger_weights differ in length")
        if len(self.arrival_hour_weights) != 24:
            raise ValueError("arrival_hour_weights needs 24 values")
        if 60 * 24 % self.file_minutes:
            raise ValueError("file_minutes must divide a day")
        # Overlaps are resolved against the previous day only (see _drop_overlapping).
        if self.max_duration_h + self.min_gap_minutes / 60 > 22:
            raise ValueError("max_duration_h + min_gap_minutes must stay under 22 h")


@dataclass(frozen=True)
class SimulationSummary:
    sessions: int
    messages: int
    files: int


# --------------------------------------------------------------------------- hashed randomness

# One stream per purpose, so that adding a draw never shifts another.
_EV, _CHARGER, _TOU, _RATE, _ENERGY_MEAN = 1, 2, 3, 4, 5
_SESSION, _HOUR, _OFFSET, _TOU_EVENING, _ENERGY_A, _ENERGY_B, _DRAW = 11, 12, 13, 14, 15, 16, 17
_DELAY_START_A, _DELAY_START_B, _DELAY_END_A, _DELAY_END_B = 21, 22, 23, 24


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, stream: int, *keys: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) draws that are a pure function of seed, stream and keys."""
    with np.errstate(over="ignore"):
        h = _splitmix64(np.atleast_1d(np.asarray(seed, dtype=np.uint64)) ^ np.uint64(stream))
        for key in keys:
            h = _splitmix64(h ^ np.asarray(key).astype(np.uint64))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def _normal(seed: int, streams: tuple[int, int], *keys: np.ndarray) -> np.ndarray:
    """Standard normal draws (Box-Muller on two hashed uniforms)."""
    u1 = _uniform(seed, streams[0], *keys)
    u2 = _uniform(seed, streams[1], *keys)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _entity_keys(ids: pl.Series) -> np.ndarray:
    """Integer hash keys for identifiers: the number itself when numeric (as the spec's
    ids are), else a stable 64-bit digest of the text."""
    numeric = ids.cast(pl.Int64, strict=False)
    if numeric.null_count() == 0:
        return numeric.to_numpy()
    return np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in ids],
        dtype=np.uint64,
    )


# --------------------------------------------------------------------------- EV population


def ev_population(
    utility: dict[str, pl.DataFrame], seed: int, config: SimulationConfig = SimulationConfig()
) -> pl.DataFrame:
    """The homes with an EV, as a function of the seed and the service point only.

    The EV belongs to the home, so it is keyed on the service point (which outlives
    meter exchanges). Columns: service_point_id, charger_kw, tou (bool),
    sessions_per_month, energy_mean_wh, adopted_day (epoch day of its first possible session: the
    smallest int64 / 2 without an adoption curve, the EV being there all along).
    """
    sp_ids = utility["service_points"]["service_point_id"].unique().sort()
    keys = _entity_keys(sp_ids)
    u = _uniform(seed, _EV, keys)
    curve = config.adoption
    has_ev = u < (curve.saturation if curve else config.ev_share)
    keys, sp_ids, u = keys[has_ev], sp_ids.filter(pl.Series(has_ev)), u[has_ev]
    weights = np.broadcast_to(np.asarray(config.charger_weights, dtype=float), (len(keys), len(config.charger_weights)))
    if curve:
        adopted = curve.adoption_day(u)
        years_after = (adopted - (curve.midpoint - EPOCH).days) / 365.25
        level_1 = np.asarray(config.charger_kw) < 2.0
        factor = np.minimum(np.exp(-curve.level_1_decline_per_year * years_after), 1.0)
        weights = np.where(level_1[None, :], weights * factor[:, None], weights)
    else:
        adopted = np.full(len(keys), np.iinfo(np.int64).min // 2)
    cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    charger = (cdf < _uniform(seed, _CHARGER, keys)[:, None]).sum(axis=1)
    charger = np.minimum(charger, weights.shape[1] - 1)
    return pl.DataFrame(
        {
            "service_point_id": sp_ids,
            "adopted_day": adopted,
            "charger_kw": np.asarray(config.charger_kw, dtype=float)[charger],
            "tou": _uniform(seed, _TOU, keys) < config.tou_share,
            "sessions_per_month": config.sessions_per_month
            * (1 + config.sessions_per_month_spread * (2 * _uniform(seed, _RATE, keys) - 1)),
            "energy_mean_wh": config.energy_mean_wh
            * (1 + config.energy_mean_spread * (2 * _uniform(seed, _ENERGY_MEAN, keys) - 1)),
        }
    )


# --------------------------------------------------------------------------- sessions


def simulate_sessions(
    utility: dict[str, pl.DataFrame],
    start: date,
    days: int,
    seed: int,
    config: SimulationConfig = SimulationConfig(),
) -> pl.DataFrame:
    """Ground truth: one row per charging session starting in local days [start, start+days).

    Identity columns are as of the session's local start date (point-in-time join on the
    reference data's ``[effective_from, effective_to)``). Sessions may end after the span.
    Columns: see :data:`SESSION_COLUMNS`; times are ``Datetime("us", "UTC")`` with
    centisecond precision, charge_w in W, energy_wh in Wh, duration_h in hours.
    """
    evs = ev_population(utility, seed, config)
    first_day = (start - EPOCH).days
    # One day of look-back: yesterday's session decides whether today's can start.
    # The day-level draws (which days, when, how much) of another realization of the same EVs.
    day_seed = seed if config.realization == 0 else seed ^ (0x5851F42D4C957F2D * config.realization % 2**63)
    candidates = _candidate_sessions(evs, first_day - 1, days + 1, day_seed, config)
    sessions = _drop_overlapping(candidates, config).filter(pl.col("day") >= first_day)
    return _attach_identity(sessions, utility).select(SESSION_COLUMNS).sort("start_time", "session_id")


def _candidate_sessions(
    evs: pl.DataFrame, first_day: int, n_days: int, seed: int, config: SimulationConfig
) -> pl.DataFrame:
    """Every (EV, local day) that draws a session, with its times, power and energy."""
    n_evs = evs.height
    ev_index = np.repeat(np.arange(n_evs), n_days)
    day = np.tile(np.arange(first_day, first_day + n_days), n_evs)
    keys = _entity_keys(evs["service_point_id"])[ev_index]
    daily_probability = np.minimum(evs["sessions_per_month"].to_numpy()[ev_index] / 30.44, 1.0)
    drawn = (_uniform(seed, _SESSION, keys, day) < daily_probability) & (day >= evs["adopted_day"].to_numpy()[ev_index])
    ev_index, day, keys = ev_index[drawn], day[drawn], keys[drawn]

    seconds_cs = _local_start_centiseconds(evs["tou"].to_numpy()[ev_index], keys, day, seed, config)
    charge_w, energy_wh = _power_and_energy(evs, ev_index, keys, day, seed, config)
    duration_cs = np.maximum(np.round(energy_wh / charge_w * 360_000), 6_000).astype(np.int64)
    start_time = _local_to_utc(day, seconds_cs, config.timezone)
    return (
        pl.DataFrame(
            {
                "service_point_id": evs["service_point_id"].gather(ev_index),
                "day": day,
                "start_time": start_time,
                "duration_cs": duration_cs,
                "charge_w": charge_w,
            }
        )
        .with_columns(end_time=pl.col("start_time") + pl.duration(microseconds=pl.col("duration_cs") * CENTISECOND_US))
        .with_columns(
            duration_h=pl.col("duration_cs") / 360_000,
            # Energy consistent with power x duration, to the reported centiwatt-hour.
            energy_wh=(pl.col("charge_w") * pl.col("duration_cs") / 360_000).round(2),
        )
    )


def _local_start_centiseconds(
    tou: np.ndarray, keys: np.ndarray, day: np.ndarray, seed: int, config: SimulationConfig
) -> np.ndarray:
    """Start as centiseconds after local midnight.

    Arrivals follow the hourly profile; TOU EVs start on a timer just after midnight
    (DOMAIN.md: the "timer spike"), except on the days they are charged on arrival anyway.
    """
    weights = np.asarray(config.arrival_hour_weights, dtype=float)
    cdf = np.cumsum(weights) / weights.sum()
    hour = np.minimum(np.searchsorted(cdf, _uniform(seed, _HOUR, keys, day), side="right"), 23)
    within = _uniform(seed, _OFFSET, keys, day)
    arrival_cs = hour * 360_000 + np.floor(within * 360_000)
    timer_cs = np.minimum(
        np.floor(-np.log(within) * config.tou_mean_delay_minutes * 6_000),
        config.tou_window_minutes * 6_000 - 1,
    )
    on_timer = tou & (_uniform(seed, _TOU_EVENING, keys, day) >= config.tou_evening_share)
    return np.where(on_timer, timer_cs, arrival_cs).astype(np.int64)


def _power_and_energy(
    evs: pl.DataFrame,
    ev_index: np.ndarray,
    keys: np.ndarray,
    day: np.ndarray,
    seed: int,
    config: SimulationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Charging power (W, to the centiwatt) and requested energy (Wh) per session."""
    low, high = config.power_draw_range
    draw = low + (high - low) * _uniform(seed, _DRAW, keys, day)
    charge_w = np.round(evs["charger_kw"].to_numpy()[ev_index] * 1000 * draw, 2)
    sigma = math.sqrt(math.log(1 + config.energy_cv**2))
    mu = np.log(evs["energy_mean_wh"].to_numpy()[ev_index]) - sigma**2 / 2
    energy_wh = np.exp(mu + sigma * _normal(seed, (_ENERGY_A, _ENERGY_B), keys, day))
    # Clip so a session ends within max_duration_h (a slow charger tops up, it never fills).
    return charge_w, np.clip(energy_wh, config.energy_min_wh, charge_w * config.max_duration_h)


def _local_to_utc(day: np.ndarray, seconds_cs: np.ndarray, timezone: str) -> pl.Series:
    """Local wall-clock (epoch day + centiseconds) to UTC; times in a spring-forward gap
    move one hour later, ambiguous fall-back times take the first occurrence."""
    local_us = day.astype(np.int64) * 86_400_000_000 + seconds_cs * CENTISECOND_US
    naive = pl.Series("start_time", local_us).cast(pl.Datetime("us"))
    localized = naive.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    shifted = (naive + timedelta(hours=1)).dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    return localized.fill_null(shifted).dt.convert_time_zone("UTC")


def _drop_overlapping(candidates: pl.DataFrame, config: SimulationConfig) -> pl.DataFrame:
    """Drop a session that would start before the previous day's candidate ended plus a gap.

    Comparing with the previous day's *candidate* (kept or not) keeps each day's outcome
    independent of the span simulated; sessions never outlast a day (config check), so
    only the previous day can overlap.
    """
    gap = timedelta(minutes=config.min_gap_minutes)
    previous = pl.col("end_time").shift(1).over("service_point_id", order_by="day")
    previous_day = pl.col("day").shift(1).over("service_point_id", order_by="day")
    clashes = (previous_day == pl.col("day") - 1) & (pl.col("start_time") < previous + gap)
    return candidates.filter(~clashes.fill_null(False))


def _attach_identity(sessions: pl.DataFrame, utility: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Identity fields as of the session's local start date (point-in-time joins)."""
    event_date = pl.col("event_date")
    service_points = utility["service_points"].select(
        "service_point_id", "premise_id", "transformer_id", "effective_from", "effective_to"
    )
    meters = utility["meters"].select(
        "service_point_id", "meter_id", "meter_number", "esn", "effective_from", "effective_to"
    )
    return (
        sessions.with_columns(event_date=pl.col("day").cast(pl.Int32).cast(pl.Date))
        .join(service_points, on="service_point_id")
        .filter(valid_on(event_date))
        .drop("effective_from", "effective_to")
        .join(meters, on="service_point_id")
        .filter(valid_on(event_date))
        .with_columns(
            session_id=pl.concat_str(pl.lit("EV-"), "service_point_id", pl.lit("-"), event_date.dt.strftime("%Y%m%d"))
        )
    )


# --------------------------------------------------------------------------- messages


def session_messages(sessions: pl.DataFrame, seed: int, config: SimulationConfig = SimulationConfig()) -> pl.DataFrame:
    """The feed's messages for ``sessions``: a start and an end message each.

    ReceivedTime is the event time plus a seeded network delay (lognormal, seconds to a
    couple of minutes); an end message is never received before its own start message.
    Sorted by ReceivedTime. Columns: :data:`MESSAGE_COLUMNS`.
    """
    keys = _entity_keys(sessions["service_point_id"])
    start_us = sessions["start_time"].dt.epoch("us").to_numpy()
    start_delay = _network_delay_us(seed, (_DELAY_START_A, _DELAY_START_B), keys, start_us, config)
    end_delay = _network_delay_us(seed, (_DELAY_END_A, _DELAY_END_B), keys, start_us, config)
    identity = {
        "ServicePointID": pl.col("service_point_id"),
        "MeterID": pl.col("meter_id"),
        "MeterNumber": pl.col("meter_number"),
        "ESN": pl.col("esn"),
        "TransformerID": pl.col("transformer_id"),
        "PremiseID": pl.col("premise_id"),
    }
    timed = sessions.with_columns(
        start_received=pl.col("start_time") + pl.duration(microseconds=pl.Series(start_delay)),
        end_received=pl.col("end_time") + pl.duration(microseconds=pl.Series(end_delay)),
    ).with_columns(
        end_received=pl.max_horizontal("end_received", pl.col("start_received") + timedelta(milliseconds=10))
    )
    null_time, null_number = pl.lit(None, dtype=UTC_US), pl.lit(None, dtype=pl.Float64)
    starts = timed.select(
        message_type=pl.lit("start"),
        **identity,
        ReceivedTime="start_received",
        ChargeStartTime="start_time",
        ChargeEndTime=null_time,
        ChargeW="charge_w",
        ChargeDuration=null_number,
        ChargeEnergy=null_number,
    )
    ends = timed.select(
        message_type=pl.lit("end"),
        **identity,
        ReceivedTime="end_received",
        ChargeStartTime=null_time,
        ChargeEndTime="end_time",
        ChargeW=null_number,
        # The spec documents integer hours (DOMAIN.md notes the example disagrees).
        ChargeDuration=pl.col("duration_h").round(0).clip(lower_bound=1.0),
        ChargeEnergy="energy_wh",
    )
    return (
        pl.concat([starts, ends])
        .with_columns(pl.col("ReceivedTime", "ChargeStartTime", "ChargeEndTime").cast(UTC_US))
        .sort("ReceivedTime", "ServicePointID", "message_type")
    )


def _network_delay_us(
    seed: int,
    streams: tuple[int, int],
    keys: np.ndarray,
    start_us: np.ndarray,
    config: SimulationConfig,
) -> np.ndarray:
    seconds = config.delay_median_s * np.exp(config.delay_sigma * _normal(seed, streams, keys, start_us))
    seconds = np.clip(seconds, config.delay_min_s, config.delay_max_s)
    return (np.round(seconds * 100) * CENTISECOND_US).astype(np.int64)  # centiseconds


# --------------------------------------------------------------------------- payload files


def write_feed(messages: pl.DataFrame, landing_dir: Path, config: SimulationConfig = SimulationConfig()) -> list[Path]:
    """Write the messages as payload files, one per ``file_minutes`` window of ReceivedTime.

    Returns the written paths in chronological order. See the module docstring for the format.
    """
    return _write_windows(_payload_lines(messages, config.file_minutes), Path(landing_dir), config.file_minutes)


def _iso_utc(column: str) -> pl.Expr:
    """``2023-09-13T00:29:55.55Z``: UTC, two fractional digits (null stays null)."""
    value = pl.col(column).dt.convert_time_zone("UTC")
    centis = (value.dt.microsecond() // CENTISECOND_US).cast(pl.String).str.zfill(2)
    return value.dt.strftime("%Y-%m-%dT%H:%M:%S") + "." + centis + "Z"


def _payload_lines(messages: pl.DataFrame, file_minutes: int) -> pl.DataFrame:
    """One JSON record per message (spec field order, numbers as strings) and its window."""
    window_us = file_minutes * 60_000_000
    record = pl.struct(
        *[pl.col(name) for name in FEED_FIELDS[:6]],
        *[_iso_utc(name).alias(name) for name in ("ReceivedTime", "ChargeStartTime", "ChargeEndTime")],
        pl.col("ChargeW").cast(pl.String),
        pl.col("ChargeDuration").round(0).cast(pl.Int64).cast(pl.String),
        pl.col("ChargeEnergy").cast(pl.String),
    )
    return messages.sort("ReceivedTime", "ServicePointID", "message_type").select(
        window=pl.col("ReceivedTime").dt.epoch("us") // window_us * window_us,
        record=record.struct.json_encode(),
    )


def _write_windows(lines: pl.DataFrame, landing_dir: Path, file_minutes: int) -> list[Path]:
    """Write one payload file per window in ``lines`` (columns window, record)."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    files = lines.group_by("window", maintain_order=True).agg(body=pl.col("record").str.join(",\n")).sort("window")
    window_seconds = file_minutes * 60
    paths = []
    for window_us, body in files.iter_rows():
        window_start = window_us // 1_000_000
        name = datetime.fromtimestamp(window_start, UTC).strftime("ev_%Y%m%dT%H%M%SZ.json")
        paths.append(
            _write_atomically(
                landing_dir / name,
                '{"EVChargingEvents": [\n' + body + "\n]}\n",
                window_start + window_seconds,
            )
        )
    return paths


def _write_atomically(path: Path, text: str, mtime: float) -> Path:
    """Readers never see a partial file: write ``.tmp``, then rename over the final name.
    The mtime is the window end, so a listing by mtime is chronological."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.utime(temporary, (mtime, mtime))
    os.replace(temporary, path)
    return path


def write_ground_truth(sessions: pl.DataFrame, path: Path) -> None:
    """Write the sessions (ground truth) as Parquet, keeping the exact dtypes
    (UTC datetimes, Float64). Read back with ``pl.read_parquet(path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sessions.write_parquet(path)


# --------------------------------------------------------------------------- conveniences


def simulate_to_folder(
    utility: dict[str, pl.DataFrame],
    landing_dir: Path,
    start: date,
    days: int,
    seed: int,
    config: SimulationConfig = SimulationConfig(),
    ground_truth: Path | None = None,
) -> SimulationSummary:
    """Simulate ``days`` local days from ``start`` and write the whole feed (and the truth)."""
    sessions = simulate_sessions(utility, start, days, seed, config)
    messages = session_messages(sessions, seed, config)
    paths = write_feed(messages, landing_dir, config)
    if ground_truth is not None:
        write_ground_truth(sessions, ground_truth)
    return SimulationSummary(sessions=sessions.height, messages=messages.height, files=len(paths))


class _SimulatedClock:
    """UTC "now", running ``speedup`` times faster than the wall clock from the start."""

    def __init__(self, speedup: float) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be > 0")
        self.speedup = speedup
        self.anchor = datetime.now(UTC)
        self._anchor_monotonic = time.monotonic()

    def now(self) -> datetime:
        return self.anchor + timedelta(seconds=(time.monotonic() - self._anchor_monotonic) * self.speedup)

    def real_seconds_until(self, moment: datetime) -> float:
        return max((moment - self.now()).total_seconds() / self.speedup, 0.0)


def _local_date(moment: datetime, timezone: str) -> date:
    return pl.Series([moment]).dt.convert_time_zone(timezone).dt.date().item()


def follow_wall_clock(
    utility: dict[str, pl.DataFrame],
    landing_dir: Path,
    seed: int,
    config: SimulationConfig = SimulationConfig(),
    speedup: float = 1.0,
    stop_after: timedelta | None = None,
) -> None:
    """Play the feed live: write each window's file once its window has closed.

    Simulated time starts at the current UTC time and runs ``speedup`` times faster than
    the wall clock (file mtimes are window ends in simulated time, so they run ahead of
    the real clock when sped up). Sessions are generated a local day ahead, starting with
    yesterday's (whose ends are still arriving); windows that closed before the call are
    history and are not written. A file's content is the same as :func:`write_feed` gives
    for the same seed. Runs until ``stop_after`` of *wall-clock* time (forever if None).
    """
    landing_dir = Path(landing_dir)
    clock = _SimulatedClock(speedup)
    window = timedelta(minutes=config.file_minutes)
    deadline = None if stop_after is None else time.monotonic() + stop_after.total_seconds()
    next_day = _local_date(clock.now(), config.timezone) - timedelta(days=1)
    written_until = _window_start(clock.now(), window)
    pending: list[pl.DataFrame] = []  # messages not yet written
    while True:
        now = clock.now()
        while next_day <= _local_date(now, config.timezone) + timedelta(days=1):
            sessions = simulate_sessions(utility, next_day, 1, seed, config)
            pending.append(session_messages(sessions, seed, config))
            next_day += timedelta(days=1)
        closed_until = _window_start(now, window)
        messages = pl.concat(pending)
        due = messages.filter(pl.col("ReceivedTime").is_between(written_until, closed_until, closed="left"))
        write_feed(due, landing_dir, config)
        pending = [messages.filter(pl.col("ReceivedTime") >= closed_until)]
        written_until = max(written_until, closed_until)
        pause = clock.real_seconds_until(closed_until + window)
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            pause = min(pause, remaining)
        time.sleep(pause)


def _window_start(moment: datetime, window: timedelta) -> datetime:
    step = int(window.total_seconds() * 1_000_000)
    return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=_epoch_us(moment) // step * step)


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime.fromtimestamp(0, UTC)) // timedelta(microseconds=1)


__all__ = [
    "AdoptionCurve",
    "FEED_FIELDS",
    "MESSAGE_COLUMNS",
    "SESSION_COLUMNS",
    "SimulationConfig",
    "SimulationSummary",
    "ev_population",
    "follow_wall_clock",
    "session_messages",
    "simulate_sessions",
    "simulate_to_folder",
    "write_feed",
    "write_ground_truth",
]
