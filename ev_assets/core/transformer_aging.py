"""Transformer insulation aging from the 15-minute load profile, per IEEE Std C57.91-2011 (Guide
for Loading Mineral-Oil-Immersed Transformers): temperatures by the exponential method of clause 7,
aging by clause 5. Pure numpy / polars (no Dagster, no database).

Load. K(t), the load in per-unit of the rating over each 15-minute interval, is

    K = (EV kVA + base kVA) / kva_rating = EV kVA / kva_rating + base_pu(local hour) x scale

where the base (non-EV) load is a daily profile in per-unit of the rating, one value per local
hour (`DEFAULT_BASE_LOAD_PU`: a residential shape, 0.24 pu at night, 0.60 pu at 19:00; setting
EV_BASE_LOAD_PU_PROFILE, scaled by EV_BASE_LOAD_SCALE). EV and base kVA are added arithmetically
(the same power factor). Intervals without EV load have EV kVA 0.

Temperatures (clause 7.2, the exponential / difference-equation method; equation numbers of the
2011 edition):

- hot spot, eq. (13):                 θ_H = θ_A + Δθ_TO + Δθ_H
- ultimate top-oil rise, eq. (15):    Δθ_TO,U = Δθ_TO,R x [(K² R + 1) / (R + 1)]^n
- top-oil rise after t, eq. (14):     Δθ_TO = (Δθ_TO,U - Δθ_TO,i)(1 - exp(-t / τ_TO)) + Δθ_TO,i
- oil time constant, eq. (16):        τ_TO = τ_TO,R x (Δθ_TO,U/Δθ_TO,R - Δθ_TO,i/Δθ_TO,R)
                                              / ((Δθ_TO,U/Δθ_TO,R)^(1/n) - (Δθ_TO,i/Δθ_TO,R)^(1/n))
  (equal to τ_TO,R when n = 1, or in the limit Δθ_TO,U -> Δθ_TO,i)
- ultimate hot-spot rise, eq. (19):   Δθ_H,U = Δθ_H,R x K^(2m)
- hot-spot rise after t, eq. (18):    Δθ_H = (Δθ_H,U - Δθ_H,i)(1 - exp(-t / τ_w)) + Δθ_H,i

The load is constant within an interval. Every 15-minute interval is its own period of constant
load: τ_TO by eq. (16) from the top-oil rise at the interval's start, eqs. (14) and (18) from the
rises at its start (a rule continuous in K: holding τ_TO while K is exactly unchanged made a change
of K in the ninth digit move F_EQA by 9 %; see `temperatures`). Within the interval the rises are
the closed-form exponentials, and F_AA is integrated over them (Gauss-Legendre, QUADRATURE_NODES),
not sampled at the interval's end; hot_spot_max_c is the highest hot spot at the nodes or ends.

Heat carries over midnight: a transformer-day starts from the end rises of its day before
(END_STATE_COLUMNS, kept with the day). Only where the day before is unknown does a day start from
its own daily cycle: the rises set to the steady state of the day's mean K, the day run once as a
warm-up (τ_TO ≈ 3 h, so after 24 h the start is forgotten to e^-8), the second pass reported.

Aging (clause 5):

- aging acceleration factor, eq. (2): F_AA = exp(15000/383 - 15000/(θ_H + 273))   (= 1 at 110 °C)
- equivalent aging, eq. (3):          F_EQA = Σ F_AA,n Δt_n / Σ Δt_n
- loss of life over the day:          F_EQA x day length in hours (h of normal life at 110 °C;
                                      normal life 180 000 h, clause 5.3 / table 2)

Default parameters (`ThermalParameters`): a 65 °C-rise ONAN distribution transformer, the rated
hot spot 110 °C at 30 °C ambient (clause 5: the reference of eq. 2): Δθ_TO,R = 55 K,
Δθ_H,R = 25 K (55 + 25 = 80 K rise), R = 4.0 (load loss / no-load loss at rated load), n = m = 0.8
(ONAN exponents, clause 7.2.5 table 4), τ_TO,R = 180 min, τ_w = 4 min. Ambient: EV_AMBIENT_C,
default 30 °C (the guide's usual reference ambient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

INTERVAL_MINUTES = 15.0
REFERENCE_HOT_SPOT_C = 110.0  # clause 5: F_AA = 1 at 110 °C (65 °C-rise insulation)
AGING_B = 15000.0  # clause 5, eq. (2): the aging-rate constant B

# Residential non-EV load, per-unit of the transformer rating, by local hour 0..23: low at night,
# a morning shoulder, the evening peak 0.60 pu at 19:00.
DEFAULT_BASE_LOAD_PU: tuple[float, ...] = (
    0.30,
    0.27,
    0.25,
    0.24,
    0.24,
    0.26,
    0.32,
    0.38,
    0.38,
    0.35,
    0.34,
    0.34,
    0.35,
    0.35,
    0.36,
    0.39,
    0.45,
    0.52,
    0.58,
    0.60,
    0.58,
    0.52,
    0.44,
    0.36,
)
DEFAULT_AMBIENT_C = 30.0


@dataclass(frozen=True)
class ThermalParameters:
    """Clause 7 parameters (defaults: module docstring)."""

    top_oil_rise_rated: float = 55.0  # Δθ_TO,R, K
    hot_spot_rise_rated: float = 25.0  # Δθ_H,R (hot spot over top oil at rated load), K
    loss_ratio: float = 4.0  # R = load loss at rated load / no-load loss
    n: float = 0.8  # oil exponent (ONAN)
    m: float = 0.8  # winding exponent (ONAN)
    tau_top_oil_min: float = 180.0  # τ_TO,R, minutes
    tau_winding_min: float = 4.0  # τ_w, minutes


DEFAULT_PARAMETERS = ThermalParameters()


def parse_base_profile(text: str) -> tuple[float, ...]:
    """24 comma-separated per-unit values (local hours 0..23), e.g. EV_BASE_LOAD_PU_PROFILE."""
    values = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    if len(values) != 24 or any(v < 0 or not math.isfinite(v) for v in values):
        raise ValueError(f"a base load profile is 24 non-negative per-unit values (local hours 0-23); got {text!r}")
    return values


def ultimate_top_oil_rise(k: np.ndarray | float, p: ThermalParameters = DEFAULT_PARAMETERS) -> np.ndarray:
    """Clause 7.2, eq. (15): Δθ_TO,U = Δθ_TO,R [(K² R + 1)/(R + 1)]^n."""
    k = np.asarray(k, dtype=float)
    return p.top_oil_rise_rated * ((k**2 * p.loss_ratio + 1) / (p.loss_ratio + 1)) ** p.n


def ultimate_hot_spot_rise(k: np.ndarray | float, p: ThermalParameters = DEFAULT_PARAMETERS) -> np.ndarray:
    """Clause 7.2, eq. (19): Δθ_H,U = Δθ_H,R K^(2m)."""
    return p.hot_spot_rise_rated * np.asarray(k, dtype=float) ** (2 * p.m)


def top_oil_time_constant(
    initial: np.ndarray, ultimate: np.ndarray, p: ThermalParameters = DEFAULT_PARAMETERS
) -> np.ndarray:
    """Clause 7.2, eq. (16): τ_TO for a change from Δθ_TO,i to Δθ_TO,U, minutes. τ_TO,R when
    n = 1, and when the two rises are equal (no change: the time constant does not matter)."""
    u = np.asarray(ultimate, dtype=float) / p.top_oil_rise_rated
    i = np.asarray(initial, dtype=float) / p.top_oil_rise_rated
    if p.n == 1:
        return np.full(np.broadcast(u, i).shape, p.tau_top_oil_min)
    den = u ** (1 / p.n) - i ** (1 / p.n)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = p.tau_top_oil_min * (u - i) / den
    return np.where(np.abs(den) > 1e-12, tau, p.tau_top_oil_min)


def aging_acceleration(hot_spot_c: np.ndarray | float) -> np.ndarray:
    """Clause 5, eq. (2): F_AA = exp(15000/383 - 15000/(θ_H + 273)); 1 at θ_H = 110 °C."""
    return np.exp(AGING_B / (REFERENCE_HOT_SPOT_C + 273) - AGING_B / (np.asarray(hot_spot_c, dtype=float) + 273))


def equivalent_aging(f_aa: np.ndarray, dt: np.ndarray | float | None = None, axis: int = -1) -> np.ndarray:
    """Clause 5, eq. (3): F_EQA = Σ F_AA,n Δt_n / Σ Δt_n (equal steps when dt is None)."""
    f_aa = np.asarray(f_aa, dtype=float)
    if dt is None:
        return f_aa.mean(axis=axis)
    dt = np.broadcast_to(np.asarray(dt, dtype=float), f_aa.shape)
    return (f_aa * dt).sum(axis=axis) / dt.sum(axis=axis)


@dataclass(frozen=True)
class Temperatures:
    """Per step, shape (rows, steps): the rises and hot spot at the step's end, and, integrated
    within the step, the mean aging acceleration F_AA (eq. 3 over the step) and the highest hot
    spot seen at the quadrature nodes or the step's end."""

    top_oil_rise: np.ndarray
    hot_spot_rise: np.ndarray
    hot_spot: np.ndarray
    aging_factor: np.ndarray
    hot_spot_peak: np.ndarray


# F_AA is integrated within each step by Gauss-Legendre quadrature on the closed-form rises
# (eqs. 14 and 18 are exponentials in the time since the step's start): 8 nodes reproduce a
# quarter-second trapezoid of the same model to 2e-6 relative in every interval, and the day's
# F_EQA to 1e-7 (test_transformer_aging).
QUADRATURE_NODES = 8


def temperatures(
    k: np.ndarray,
    ambient_c: float | np.ndarray,
    p: ThermalParameters = DEFAULT_PARAMETERS,
    *,
    dt_min: float = INTERVAL_MINUTES,
    initial: tuple[np.ndarray | float, np.ndarray | float] | None = None,
    nodes: int = QUADRATURE_NODES,
) -> Temperatures:
    """Clause 7 exponential method over the steps of `k` (shape (rows, steps), or (steps,)),
    constant load within a step of `dt_min` minutes. `initial` = (Δθ_TO, Δθ_H) at the start;
    None: at rest (both 0, the transformer at ambient).

    τ_TO rule (eq. 16): every step is its own period of constant load, τ_TO computed from the
    top-oil rise at the step's start, whether or not K changed. Holding τ_TO for as long as K is
    exactly unchanged makes the result jump with a change of K in the ninth digit (a new period
    starts); per step it is a continuous function of every K. For a load held over several steps it
    differs slightly from one eq. (14) exponential over the whole period (a step from 0.5 to 1 pu:
    within 0.4 K), and it depends on the step length (15 minutes here, the load's resolution)."""
    k = np.atleast_2d(np.asarray(k, dtype=float))
    return _temperatures(_Steps(k, p), ambient_c, p, dt_min=dt_min, initial=initial, nodes=nodes)


class _Steps:
    """A load matrix prepared for the step loop: steps along the first axis, so each step's column
    of K (one value per row) is contiguous memory, and the ultimate rises of eqs. (15) and (19)
    computed for every step at once (element-wise, as per step) and shared by the passes of a
    daily cycle."""

    def __init__(self, k: np.ndarray, p: ThermalParameters):
        self.rows, self.steps = k.shape
        self.k = np.ascontiguousarray(k.T)
        self.top_oil_ultimate = ultimate_top_oil_rise(self.k, p)  # eq. (15)
        self.hot_spot_ultimate = ultimate_hot_spot_rise(self.k, p)  # eq. (19)


def _temperatures(
    steps: _Steps,
    ambient_c: float | np.ndarray,
    p: ThermalParameters,
    *,
    dt_min: float,
    initial: tuple[np.ndarray | float, np.ndarray | float] | None,
    nodes: int = QUADRATURE_NODES,
) -> Temperatures:
    rows = steps.rows
    to = np.broadcast_to(np.asarray(0.0 if initial is None else initial[0], dtype=float), (rows,)).copy()
    hs = np.broadcast_to(np.asarray(0.0 if initial is None else initial[1], dtype=float), (rows,)).copy()
    ambient = np.broadcast_to(np.asarray(ambient_c, dtype=float).reshape(-1), (rows,))[:, None]
    to_out = np.empty((steps.steps, rows))
    hs_out = np.empty((steps.steps, rows))
    f_out = np.empty((steps.steps, rows))
    peak_out = np.empty((steps.steps, rows))
    # Quadrature nodes in [0, dt] (times since the step's start) and weights summing to 1.
    x, w = np.polynomial.legendre.leggauss(nodes)
    node_t = (x + 1) / 2 * dt_min
    node_w = w / 2
    decay_w = math.exp(-dt_min / p.tau_winding_min)
    node_decay_w = np.exp(-node_t / p.tau_winding_min)
    for j in range(steps.steps):
        to_u = steps.top_oil_ultimate[j]  # eq. (15)
        hs_u = steps.hot_spot_ultimate[j]  # eq. (19)
        tau = top_oil_time_constant(to, to_u, p)  # eq. (16), from the rise at this step's start
        # eqs. (14) and (18) inside the step (at the nodes) and at its end.
        to_nodes = to[:, None] + (to_u - to)[:, None] * (1 - np.exp(-node_t / tau[:, None]))
        hs_nodes = hs_u[:, None] + (hs - hs_u)[:, None] * node_decay_w
        hot_nodes = ambient + to_nodes + hs_nodes  # eq. (13)
        f_out[j] = aging_acceleration(hot_nodes) @ node_w
        to = (to_u - to) * (1 - np.exp(-dt_min / tau)) + to  # eq. (14)
        hs = (hs_u - hs) * (1 - decay_w) + hs  # eq. (18)
        to_out[j] = to
        hs_out[j] = hs
        peak_out[j] = np.maximum(hot_nodes.max(axis=1), ambient[:, 0] + to + hs)
    # Back to (rows, steps), contiguous: sums along a row (eq. 3) then add in the same order.
    to_out, hs_out = np.ascontiguousarray(to_out.T), np.ascontiguousarray(hs_out.T)
    hot = ambient + to_out + hs_out  # eq. (13)
    return Temperatures(to_out, hs_out, hot, np.ascontiguousarray(f_out.T), np.ascontiguousarray(peak_out.T))


def daily_cycle(
    k: np.ndarray,
    ambient_c: float | np.ndarray,
    p: ThermalParameters = DEFAULT_PARAMETERS,
    *,
    dt_min: float = INTERVAL_MINUTES,
    initial: tuple[np.ndarray | float, np.ndarray | float] | None = None,
) -> Temperatures:
    """The day's temperatures. `initial` = (Δθ_TO, Δθ_H) at the day's start, per row: the end of
    the day before (heat carries over midnight). Where it is None or NaN (the day before is
    unknown) the day runs in its own daily cycle: start at the steady state of the day's mean K
    (eqs. 15, 19), run the day once as a warm-up, report the second pass."""
    k = np.atleast_2d(np.asarray(k, dtype=float))
    rows = k.shape[0]
    start_to = np.full(rows, np.nan) if initial is None else np.broadcast_to(np.asarray(initial[0], float), (rows,))
    start_hs = np.full(rows, np.nan) if initial is None else np.broadcast_to(np.asarray(initial[1], float), (rows,))
    start_to, start_hs = start_to.copy(), start_hs.copy()
    unknown = np.isnan(start_to) | np.isnan(start_hs)
    if unknown.any():
        # Only the rows without a known start pay for the warm-up pass.
        k_unknown = k[unknown]
        mean_k = k_unknown.mean(axis=1)
        ambient_unknown = np.broadcast_to(np.asarray(ambient_c, dtype=float).reshape(-1), (rows,))[unknown]
        warm = _temperatures(
            _Steps(k_unknown, p),
            ambient_unknown,
            p,
            dt_min=dt_min,
            initial=(ultimate_top_oil_rise(mean_k, p), ultimate_hot_spot_rise(mean_k, p)),
        )
        start_to[unknown] = warm.top_oil_rise[:, -1]
        start_hs[unknown] = warm.hot_spot_rise[:, -1]
    return _temperatures(_Steps(k, p), ambient_c, p, dt_min=dt_min, initial=(start_to, start_hs))


# Transformer-days modelled at once (about 100 intervals each): see daily_aging.
AGING_CHUNK_ROWS = 5000
# The end-of-day rises (END_STATE_COLUMNS) are the next day's start: kept with the day so a later
# run (another chunk, another day) carries the heat over midnight.
END_STATE_COLUMNS = ("top_oil_rise_end_k", "hot_spot_rise_end_k")
AGING_COLUMNS = ("hot_spot_max_c", "aging_factor_max", "equivalent_aging", "loss_of_life_h", *END_STATE_COLUMNS)


def daily_aging(
    profile: pl.DataFrame,
    daily: pl.DataFrame,
    *,
    tz: str,
    base_load_pu: tuple[float, ...] = DEFAULT_BASE_LOAD_PU,
    base_load_scale: float = 1.0,
    ambient_c: float = DEFAULT_AMBIENT_C,
    parameters: ThermalParameters = DEFAULT_PARAMETERS,
    chunk_rows: int = AGING_CHUNK_ROWS,
    initial_state: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`daily` (transformer-days with kva_rating) with AGING_COLUMNS added, from the transformer's
    15-minute profile (`interval_profile(level="transformer")`: transformer_id, load_date,
    interval_start, kva). Every 15-minute interval of the local day is modelled (92, 96 or 100 of
    them), the EV kVA of an interval without a profile row being 0. Null when the rating is
    unknown (or not positive). Optional columns of `daily`, the transformer's own overrides
    (reference data): base_load_scale (null: `base_load_scale`) and ambient_c (null: `ambient_c`).

    Heat carries over midnight: a transformer-day starts from the end rises (END_STATE_COLUMNS) of
    its day before, taken from `daily` itself when that day is in it, else from `initial_state`
    (transformer_id, load_date, top_oil_rise_end_k, hot_spot_rise_end_k: the end state of the
    given day), else, the day before unknown, from its own daily cycle (`daily_cycle`)."""
    key = ["transformer_id", "load_date"]
    if len(base_load_pu) != 24:
        raise ValueError("base_load_pu needs 24 hourly values")
    overrides = {"base_load_scale": base_load_scale, "ambient_c": ambient_c}
    rated = daily.filter(pl.col("kva_rating") > 0).select(
        *key,
        "kva_rating",
        *[
            (pl.col(c).fill_null(default) if c in daily.columns else pl.lit(default)).cast(pl.Float64).alias(f"_{c}")
            for c, default in overrides.items()
        ],
    )
    if rated.is_empty():
        return daily.with_columns(*[pl.lit(None, dtype=pl.Float64).alias(c) for c in AGING_COLUMNS])

    def local_midnight_utc(day: pl.Expr) -> pl.Expr:
        return (
            day.cast(pl.Datetime("us"))
            .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
        )

    # Each rated transformer-day: its local day in UTC, from its start, in n 15-minute intervals
    # (92, 96 or 100), and its row in the K matrix of the days of its length.
    step_us = int(INTERVAL_MINUTES * 60 * 1e6)
    rated = rated.with_columns(
        local_midnight_utc(pl.col("load_date")).alias("_start"),
        local_midnight_utc(pl.col("load_date") + timedelta(days=1)).alias("_end"),
    ).with_columns(((pl.col("_end") - pl.col("_start")).dt.total_microseconds() // step_us).alias("_n"))
    rated = rated.filter(pl.col("_n") > 0)
    # The base load of each interval of each local day, by its local hour (a DST day's hours repeat
    # or skip): a few thousand distinct intervals, whatever the number of transformers.
    base = pl.DataFrame(
        {"_hour": list(range(24)), "_base_pu": list(base_load_pu)}, schema={"_hour": pl.Int8, "_base_pu": pl.Float64}
    )
    day_base = (
        rated.select("load_date", "_start", "_n")
        .unique("load_date")
        .with_columns(pl.int_ranges(0, pl.col("_n")).alias("_j"))
        .explode("_j")
        .with_columns(
            (pl.col("_start") + pl.duration(microseconds=pl.col("_j") * step_us))
            .dt.convert_time_zone(tz)
            .dt.hour()
            .cast(pl.Int8)
            .alias("_hour")
        )
        .join(base, on="_hour", how="left")
        .sort("load_date", "_j")
        .group_by("load_date", maintain_order=True)
        .agg(pl.col("_base_pu"))
    )
    # The EV kVA of each profile interval, at its place in its day (an interval of the profile
    # outside its local day's grid has no place in it, and was never part of a day's load here).
    ev = (
        profile.select(*key, pl.col("interval_start").dt.convert_time_zone("UTC"), "kva")
        .join(rated.select(*key, "_start", "_n"), on=key, how="inner")
        .with_columns((pl.col("interval_start") - pl.col("_start")).dt.total_microseconds().alias("_offset"))
        .filter(
            (pl.col("_offset") % step_us == 0)
            & (pl.col("_offset") >= 0)
            & (pl.col("_offset") // step_us < pl.col("_n"))
        )
        .with_columns((pl.col("_offset") // step_us).alias("_j"))
    )
    # Day by day in date order, so each transformer-day starts from the end of its day before
    # (heat carries over midnight): from this frame's previous day, else from `initial_state`
    # (the end state of the day before the range, e.g. read from the warehouse), else (unknown)
    # from its own daily cycle. Rows = the transformers of the day: K = EV kVA / kva_rating (0
    # without a profile row) + base pu x scale, element-wise as written, modelled `chunk_rows` at a
    # time (the passes keep several arrays of the matrix's size).
    results = []
    state = (
        initial_state.select(
            "transformer_id",
            (pl.col("load_date") + timedelta(days=1)).alias("load_date"),
            pl.col("top_oil_rise_end_k").cast(pl.Float64).alias("_to0"),
            pl.col("hot_spot_rise_end_k").cast(pl.Float64).alias("_hs0"),
        )
        if initial_state is not None
        else pl.DataFrame(
            schema={"transformer_id": pl.String, "load_date": pl.Date, "_to0": pl.Float64, "_hs0": pl.Float64}
        )
    )
    rated = rated.join(day_base, on="load_date", how="left").sort("load_date", "transformer_id")
    ev_by_date = ev.partition_by("load_date", as_dict=True)
    no_ev = ev.clear()
    for (day,), days_of_date in rated.group_by("load_date", maintain_order=True):
        n = int(days_of_date["_n"][0])
        days_of_date = (
            days_of_date.with_columns(pl.int_range(pl.len()).alias("_row"))
            .join(
                state.cast({"transformer_id": days_of_date.schema["transformer_id"]}),
                on=["transformer_id", "load_date"],
                how="left",
            )
            .sort("_row")
        )
        placed = (
            ev_by_date.get((day,), no_ev)
            .join(days_of_date.select("transformer_id", "_row"), on="transformer_id", how="inner")
            .sort("_row")
        )
        placed_row, placed_j, placed_kva = (placed[c].to_numpy() for c in ("_row", "_j", "kva"))
        day_results = []
        for first in range(0, len(days_of_date), chunk_rows):
            part = days_of_date.slice(first, chunk_rows)
            lo, hi = np.searchsorted(placed_row, [first, first + len(part)])
            kva = np.zeros((len(part), n))
            kva[placed_row[lo:hi] - first, placed_j[lo:hi]] = placed_kva[lo:hi]
            base_pu = part["_base_pu"].list.to_array(n).to_numpy()
            k = kva / part["kva_rating"].to_numpy()[:, None] + base_pu * part["_base_load_scale"].to_numpy()[:, None]
            start = (part["_to0"].fill_null(np.nan).to_numpy(), part["_hs0"].fill_null(np.nan).to_numpy())
            t = daily_cycle(k, part["_ambient_c"].to_numpy(), parameters, initial=start)
            # F_EQA from F_AA integrated within each interval (eq. 3 over the day's intervals).
            f_eqa = equivalent_aging(t.aging_factor)
            hot_spot_max = t.hot_spot_peak.max(axis=1)
            day_results.append(
                part.select(key).with_columns(
                    pl.Series("hot_spot_max_c", hot_spot_max),
                    pl.Series("aging_factor_max", aging_acceleration(hot_spot_max)),
                    pl.Series("equivalent_aging", f_eqa),
                    pl.Series("loss_of_life_h", f_eqa * n * INTERVAL_MINUTES / 60),
                    pl.Series("top_oil_rise_end_k", t.top_oil_rise[:, -1]),
                    pl.Series("hot_spot_rise_end_k", t.hot_spot_rise[:, -1]),
                )
            )
        results.extend(day_results)
        state = pl.concat(day_results).select(
            "transformer_id",
            (pl.col("load_date") + timedelta(days=1)).alias("load_date"),
            pl.col("top_oil_rise_end_k").alias("_to0"),
            pl.col("hot_spot_rise_end_k").alias("_hs0"),
        )
    if not results:  # no rated day has a local day (a midnight that does not exist in `tz`)
        return daily.with_columns(*[pl.lit(None, dtype=pl.Float64).alias(c) for c in AGING_COLUMNS])
    aging = pl.concat(results)
    return daily.join(aging, on=key, how="left")
