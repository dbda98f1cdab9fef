"""IEEE C57.91 transformer aging (ev_assets.core.transformer_aging) against closed forms computed
by hand: steady state, step response, the 110 °C reference, and the daily wiring."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ev_assets.core import transformer_aging as ta

P = ta.DEFAULT_PARAMETERS  # 55 K, 25 K, R = 4, n = m = 0.8, 180 min, 4 min
E1 = 1 - math.exp(-1)  # 0.632...: the share of a step reached after one time constant


def test_rated_load_at_110_c_hot_spot_ages_at_the_reference_rate():
    # eq. (2): F_AA = exp(15000/383 - 15000/(110 + 273)) = exp(0) = 1, exactly.
    assert ta.aging_acceleration(110.0) == 1.0
    # Rated load (K = 1) at 30 °C ambient, steady state: 30 + 55 + 25 = 110 °C.
    assert ta.ultimate_top_oil_rise(1.0) == 55.0
    assert ta.ultimate_hot_spot_rise(1.0) == 25.0
    t = ta.temperatures(np.ones(96 * 3), 30.0, initial=(55.0, 25.0))
    assert np.all(t.hot_spot == 110.0)
    assert np.all(ta.aging_acceleration(t.hot_spot) == 1.0)
    # 6 K hotter roughly doubles the rate (the guide's rule of thumb): exp(15000/383 - 15000/389).
    assert ta.aging_acceleration(116.0) == pytest.approx(math.exp(15000 / 383 - 15000 / 389))
    assert 1.8 < ta.aging_acceleration(116.0) < 1.9


def test_constant_load_reaches_the_closed_form_steady_state():
    k, ambient = 1.2, 30.0
    # Hand computation, eqs. (15), (19), (13): [(1.44 x 4 + 1)/5]^0.8 = 1.352^0.8.
    top_oil = 55 * 1.352**0.8
    hot_spot_rise = 25 * 1.2**1.6
    hot_spot = ambient + top_oil + hot_spot_rise
    assert hot_spot == pytest.approx(133.475, abs=1e-3)
    # From rest, 72 h of constant load (24 oil time constants).
    t = ta.temperatures(np.full(96 * 3, k), ambient)
    assert t.top_oil_rise[0, -1] == pytest.approx(top_oil, rel=1e-9)
    assert t.hot_spot_rise[0, -1] == pytest.approx(hot_spot_rise, rel=1e-12)
    assert t.hot_spot[0, -1] == pytest.approx(hot_spot, rel=1e-9)
    f_aa = math.exp(15000 / 383 - 15000 / (hot_spot + 273))
    assert ta.aging_acceleration(t.hot_spot[0, -1]) == pytest.approx(f_aa, rel=1e-9)
    # eq. (3) over a steady day: F_EQA = F_AA; the daily cycle of a constant day is its steady state.
    day = ta.daily_cycle(np.full(96, k), ambient)
    assert np.allclose(day.hot_spot, hot_spot, rtol=1e-12)
    assert ta.equivalent_aging(ta.aging_acceleration(day.hot_spot))[0] == pytest.approx(f_aa, rel=1e-9)


def test_load_step_follows_the_oil_and_winding_time_constants():
    # n = 1: τ_TO = τ_TO,R = 180 min (eq. 16). From rest to rated load: after 12 x 15 min the
    # top-oil rise is 63.2 % of 55 K; the winding (τ_w = 4 min, 1-minute steps) 63.2 % of 25 K.
    linear = ta.ThermalParameters(n=1.0)
    t = ta.temperatures(np.ones(24), 0.0, linear)
    assert t.top_oil_rise[0, 11] == pytest.approx(E1 * 55, rel=1e-12)
    minute = ta.temperatures(np.ones(10), 0.0, linear, dt_min=1.0)
    assert minute.hot_spot_rise[0, 3] == pytest.approx(E1 * 25, rel=1e-12)
    # The whole curve is the exponential of eq. (14).
    times = 15.0 * np.arange(1, 25)
    assert np.allclose(t.top_oil_rise[0], 55 * (1 - np.exp(-times / 180)), rtol=1e-12)

    # n = 0.8 (default): a step from the steady state at K = 0.5 to K = 1.
    i = 55 * ((0.25 * 4 + 1) / 5) ** 0.8  # eq. (15) at K = 0.5
    u = 55.0
    tau = 180 * (u / 55 - i / 55) / ((u / 55) ** (1 / 0.8) - (i / 55) ** (1 / 0.8))  # eq. (16)
    assert 150 < tau < 180
    hs_i = 25 * 0.5**1.6
    one = ta.temperatures(np.array([1.0]), 0.0, dt_min=tau, initial=(i, hs_i))
    assert one.top_oil_rise[0, 0] == pytest.approx(i + E1 * (u - i), rel=1e-12)
    # In 15-minute intervals, each interval its own period (the τ_TO rule of `temperatures`): the
    # first interval is eq. (14) with the τ of eq. (16) from the step's start, the second restarts
    # from the end of the first with its own τ, by hand.
    steps = ta.temperatures(np.ones(40), 0.0, initial=(i, hs_i))
    first = i + (u - i) * (1 - math.exp(-15 / tau))
    assert steps.top_oil_rise[0, 0] == pytest.approx(first, rel=1e-12)
    tau2 = 180 * (u / 55 - first / 55) / ((u / 55) ** (1 / 0.8) - (first / 55) ** (1 / 0.8))
    assert steps.top_oil_rise[0, 1] == pytest.approx(first + (u - first) * (1 - math.exp(-15 / tau2)), rel=1e-12)
    # The step still follows the oil time constant: within 0.4 K of the one-period exponential of
    # eq. (14) over 10 h (the per-interval τ shrinks as the rise nears 55 K, so it arrives a little
    # sooner), and the winding follows τ_w exactly (constant, so step by step is exact).
    times = 15.0 * np.arange(1, 41)
    held = i + (u - i) * (1 - np.exp(-times / tau))
    assert np.max(np.abs(steps.top_oil_rise[0] - held)) < 0.4
    assert np.all(steps.top_oil_rise[0] >= held - 1e-12)
    assert np.allclose(steps.hot_spot_rise[0], hs_i + (25 - hs_i) * (1 - np.exp(-times / 4)), rtol=1e-12)


def test_equivalent_aging_weights_by_duration():
    # eq. (3): (2 x 30 + 1 x 90) / 120 = 1.25
    assert ta.equivalent_aging(np.array([2.0, 1.0]), np.array([30.0, 90.0])) == pytest.approx(1.25)


def test_parse_base_profile():
    assert ta.parse_base_profile(",".join(["0.5"] * 24)) == (0.5,) * 24
    with pytest.raises(ValueError):
        ta.parse_base_profile("0.5,0.5")


def _profile(rows):
    return pl.DataFrame(
        rows,
        schema={
            "transformer_id": pl.String,
            "load_date": pl.Date,
            "interval_start": pl.Datetime("us", "UTC"),
            "kva": pl.Float64,
        },
        orient="row",
    )


def test_daily_aging_per_transformer_day():
    tz = "America/New_York"
    day = date(2024, 7, 1)
    midnight_utc = datetime(2024, 7, 1, 4, tzinfo=UTC)  # EDT = UTC-4
    # T1 (25 kVA): EV 12.5 kVA all day + a flat base of 0.5 pu: K = 1 all day -> 110 °C, F_AA = 1,
    # F_EQA = 1, 24 h of life. T2: no EV load in the profile (K = base only = 0.5). T3: unrated.
    ev = [("T1", day, midnight_utc + timedelta(minutes=15 * j), 12.5) for j in range(96)]
    profile = _profile(ev)
    daily = pl.DataFrame(
        {"transformer_id": ["T1", "T2", "T3"], "load_date": [day] * 3, "kva_rating": [25.0, 50.0, None]},
        schema={"transformer_id": pl.String, "load_date": pl.Date, "kva_rating": pl.Float64},
    )
    out = ta.daily_aging(profile, daily, tz=tz, base_load_pu=(0.5,) * 24, ambient_c=30.0).sort("transformer_id")
    t1, t2, t3 = out.to_dicts()
    assert t1["hot_spot_max_c"] == pytest.approx(110.0, abs=1e-9)
    assert t1["aging_factor_max"] == pytest.approx(1.0, abs=1e-9)
    assert t1["equivalent_aging"] == pytest.approx(1.0, abs=1e-9)
    assert t1["loss_of_life_h"] == pytest.approx(24.0, abs=1e-8)
    hot = 30 + 55 * ((0.25 * 4 + 1) / 5) ** 0.8 + 25 * 0.5**1.6
    assert t2["hot_spot_max_c"] == pytest.approx(hot, abs=1e-9)
    f_aa = math.exp(15000 / 383 - 15000 / (hot + 273))
    assert t2["equivalent_aging"] == pytest.approx(f_aa, rel=1e-9)
    assert t2["loss_of_life_h"] == pytest.approx(24 * f_aa, rel=1e-9)
    assert all(t3[c] is None for c in ta.AGING_COLUMNS)


def test_daily_aging_overrides_per_transformer():
    # Reference-data overrides: T1 ambient 20 °C (K = 1: 100 °C hot spot), T2 base scale 2 of a
    # 0.5 pu base (K = 1 at 30 °C: 110 °C); nulls take the settings (T3: K = 0.5 at 30 °C).
    day = date(2024, 7, 1)
    daily = pl.DataFrame(
        {
            "transformer_id": ["T1", "T2", "T3"],
            "load_date": [day] * 3,
            "kva_rating": [25.0, 25.0, 25.0],
            "base_load_scale": [2.0, 2.0, None],
            "ambient_c": [20.0, None, None],
        }
    )
    out = ta.daily_aging(_profile([]), daily, tz="UTC", base_load_pu=(0.5,) * 24, ambient_c=30.0).sort("transformer_id")
    hot = out["hot_spot_max_c"].to_list()
    assert hot[0] == pytest.approx(100.0, abs=1e-9)
    assert hot[1] == pytest.approx(110.0, abs=1e-9)
    assert hot[2] == pytest.approx(30 + 55 * ((0.25 * 4 + 1) / 5) ** 0.8 + 25 * 0.5**1.6, abs=1e-9)
    assert out["loss_of_life_h"][1] == pytest.approx(24.0, abs=1e-8)


def test_daily_aging_base_profile_by_local_hour_and_dst_day():
    # 2024-11-03, America/New_York: 25 hours, 100 intervals. Base 0 except 1.0 pu at local hour
    # 1 (which occurs twice that day: 8 intervals); no EV load. The hot spot peaks after the hour.
    tz = "America/New_York"
    day = date(2024, 11, 3)
    base = tuple(1.0 if h == 1 else 0.0 for h in range(24))
    daily = pl.DataFrame({"transformer_id": ["T"], "load_date": [day], "kva_rating": [10.0]})
    out = ta.daily_aging(_profile([]), daily, tz=tz, base_load_pu=base, ambient_c=30.0)
    # The same K series by hand: 100 intervals, local hour 1 = intervals 4..11 (8 x 15 min).
    k = np.zeros(100)
    k[4:12] = 1.0
    t = ta.daily_cycle(k, 30.0)
    f = t.aging_factor  # F_AA integrated within each interval
    row = out.row(0, named=True)
    assert row["hot_spot_max_c"] == pytest.approx(t.hot_spot_peak.max())
    assert row["equivalent_aging"] == pytest.approx(f.mean())
    assert row["loss_of_life_h"] == pytest.approx(25 * f.mean())


def test_daily_aging_in_chunks_equals_daily_aging_at_once():
    # Memory is bounded by modelling transformer-days in chunks: chunks of 1, 2 and 3 rows (one
    # chunk with no EV rows, chunks splitting one transformer's days and one day's transformers,
    # a DST day among normal ones) give exactly what one chunk gives.
    tz = "America/New_York"
    days = [date(2024, 11, 2), date(2024, 11, 3), date(2024, 11, 4)]
    ids = ["T1", "T2", "T3"]
    ev = [
        (t, d, datetime(d.year, d.month, d.day, 5, tzinfo=UTC) + timedelta(minutes=15 * j), 3.0 * (i + 1) + j)
        for i, t in enumerate(ids[:2])
        for d in days
        for j in range(12)
    ]
    daily = pl.DataFrame(
        {
            "transformer_id": [t for t in ids for _ in days],
            "load_date": days * len(ids),
            "kva_rating": [25.0, 50.0, 10.0] * len(ids),
            "ambient_c": [20.0, None, 35.0] * len(ids),
        }
    )
    kwargs = {"tz": tz, "base_load_pu": tuple(0.2 + 0.02 * h for h in range(24)), "ambient_c": 30.0}
    whole = ta.daily_aging(_profile(ev), daily, chunk_rows=len(ids) * len(days), **kwargs).sort(
        "transformer_id", "load_date"
    )
    assert whole["loss_of_life_h"].null_count() == 0
    for chunk_rows in (1, 2, 3):
        chunked = ta.daily_aging(_profile(ev), daily, chunk_rows=chunk_rows, **kwargs)
        assert_frame_equal(chunked.sort("transformer_id", "load_date"), whole)


def test_daily_load_step_writes_the_aging_of_each_rated_transformer_day(warehouse, tmp_path):
    # The hand feed of test_planning_tables (time zone UTC, T1 rated 10 kVA, power factor 0.9)
    # with a flat base load of 0.5 pu: K = 0.5 + kW / 0.9 / 10 in the 8 loaded intervals, 0.5 else.
    from ev_assets import pipeline
    from ev_assets.warehouse.tables import TRANSFORMER_DAILY_LOAD

    from .test_planning_tables import DAY, HAND_PROFILE, rate_t1, send_hand_sessions
    from .test_session_quality import NOW, Feed

    settings = pipeline.PipelineSettings(timezone="UTC", base_load_pu=(0.5,) * 24, ambient_c=25.0)
    feed = Feed(warehouse, tmp_path, settings)
    send_hand_sessions(feed)
    pipeline.update_daily_load(feed.warehouse, settings, DAY, DAY, now=NOW)
    unrated = feed.warehouse.read(TRANSFORMER_DAILY_LOAD).row(0, named=True)
    assert all(unrated[c] is None for c in ta.AGING_COLUMNS)

    rate_t1(feed.warehouse)
    pipeline.update_daily_load(feed.warehouse, settings, DAY, DAY, now=NOW)
    day = feed.warehouse.read(TRANSFORMER_DAILY_LOAD).row(0, named=True)
    k = np.full(96, 0.5)
    midnight = datetime(2024, 6, 3, tzinfo=UTC)
    for ts, kw, _ in HAND_PROFILE:
        k[int((ts - midnight) / timedelta(minutes=15))] += kw / 0.9 / 10
    t = ta.daily_cycle(k, 25.0)
    f = t.aging_factor  # F_AA integrated within each interval
    assert day["hot_spot_max_c"] == pytest.approx(t.hot_spot_peak.max(), rel=1e-12)
    assert day["aging_factor_max"] == pytest.approx(ta.aging_acceleration(t.hot_spot_peak.max()), rel=1e-12)
    assert day["equivalent_aging"] == pytest.approx(f.mean(), rel=1e-12)
    assert day["loss_of_life_h"] == pytest.approx(24 * f.mean(), rel=1e-12)
    # The peak (18:45, K = 0.5 + 1.8 = 2.3) heats the hot spot well above the 110 °C reference.
    assert day["hot_spot_max_c"] > 110 and day["aging_factor_max"] > 1


def test_a_changed_aging_override_queues_the_transformers_days(warehouse, tmp_path):
    from ev_assets import pipeline
    from ev_assets.pipeline.reference import _days_of_rerated_transformers
    from ev_assets.warehouse.tables import REF_TRANSFORMERS

    from .test_planning_tables import DAY, rate_t1, send_hand_sessions
    from .test_session_quality import NOW, Feed

    settings = pipeline.PipelineSettings(timezone="UTC")
    rate_t1(warehouse)
    send_hand_sessions(Feed(warehouse, tmp_path, settings))
    pipeline.update_daily_load(warehouse, settings, DAY, DAY, now=NOW)
    old = warehouse.read(REF_TRANSFORMERS)
    new = old.with_columns(pl.lit(35.0).alias("ambient_c"))
    with warehouse.transaction() as conn:
        assert _days_of_rerated_transformers(warehouse, conn, old, old) == []
        assert _days_of_rerated_transformers(warehouse, conn, old, new) == [DAY]


def _trapezoid_reference(k: np.ndarray, start: tuple[float, float], ambient: float, steps: int = 3600):
    """The same model as `temperatures` (each 15-minute interval its own period, τ_TO by eq. 16
    from its start) evaluated every second within each interval; F_AA by the trapezoid rule."""
    to, hs = start
    f_mean, peak = [], []
    s = np.linspace(0.0, 15.0, steps + 1)
    for kj in k:
        to_u, hs_u = float(ta.ultimate_top_oil_rise(kj)), float(ta.ultimate_hot_spot_rise(kj))
        tau = float(ta.top_oil_time_constant(np.array([to]), np.array([to_u]))[0])
        to_s = to + (to_u - to) * (1 - np.exp(-s / tau))
        hs_s = hs_u + (hs - hs_u) * np.exp(-s / 4.0)
        f = ta.aging_acceleration(ambient + to_s + hs_s)
        f_mean.append(float(np.sum((f[1:] + f[:-1]) / 2) / steps))
        peak.append(float((ambient + to_s + hs_s).max()))
        to, hs = to_s[-1], hs_s[-1]
    return np.array(f_mean), np.array(peak)


def _heavy_day() -> np.ndarray:
    # The default base profile plus 2 EVs of 7.2 kW (8 kVA at pf 0.9) on 25 kVA from 17:00 to 22:00.
    k = np.repeat(np.array(ta.DEFAULT_BASE_LOAD_PU), 4)
    k[68:88] += 2 * 8.0 / 25
    return k


def test_aging_factor_is_integrated_within_the_interval():
    k = _heavy_day()
    start = (40.0, 10.0)
    t = ta.temperatures(k, 30.0, initial=start)
    f_ref, peak_ref = _trapezoid_reference(k, start, 30.0)
    # 8 nodes: within 2.1e-6 of the reference in every interval (the largest where the load drops).
    assert np.allclose(t.aging_factor[0], f_ref, rtol=1e-5, atol=0)
    assert ta.equivalent_aging(t.aging_factor)[0] == pytest.approx(f_ref.mean(), rel=1e-6)
    assert t.hot_spot_peak.max() == pytest.approx(peak_ref.max(), abs=0.01)
    # Sampling F_AA at the interval end points (the old method) overstates this day's F_EQA: the
    # hot spot reaches each step's end only after rising through it (τ_w = 4 min): here +4.0 %.
    sampled = ta.equivalent_aging(ta.aging_acceleration(t.hot_spot))[0]
    assert sampled > 1.03 * f_ref.mean()


def test_tau_rule_is_continuous_in_k():
    # K = 1.5 held for a day vs 1.5 ± 1e-9 alternating: under the old rule (τ_TO held while K is
    # exactly unchanged) F_EQA was 104.6 vs 113.9; per-interval τ makes them agree to ~1e-7.
    flat = np.full(96, 1.5)
    wobble = flat + 1e-9 * (-1.0) ** np.arange(96)
    a, b = (ta.equivalent_aging(ta.temperatures(x, 30.0, initial=(20.0, 5.0)).aging_factor)[0] for x in (flat, wobble))
    assert a > 50
    assert abs(a - b) / a < 1e-6


def test_heat_carries_over_midnight():
    # Three UTC days, one 25 kVA transformer, base 0.5 pu; two EVs (16 kVA) from 18:00 on day 1
    # to 02:00 on day 2: day 2's charging began before its midnight.
    days = [date(2024, 6, 3) + timedelta(days=d) for d in range(3)]
    midnight = datetime(2024, 6, 3, tzinfo=UTC)
    ev = []
    k = np.full(96 * 3, 0.5)
    for j in range(72, 96 + 8):
        ts = midnight + timedelta(minutes=15 * j)
        ev.append(("T", ts.date(), ts, 16.0))
        k[j] += 16.0 / 25
    daily = pl.DataFrame({"transformer_id": ["T"] * 3, "load_date": days, "kva_rating": [25.0] * 3})
    kwargs = {"tz": "UTC", "base_load_pu": (0.5,) * 24, "ambient_c": 30.0}
    out = ta.daily_aging(_profile(ev), daily, **kwargs).sort("load_date")
    # Continuous reference: day 1 from its own daily cycle, then days 2-3 as one 48-hour run.
    first = ta.daily_cycle(k[:96], 30.0)
    rest = ta.temperatures(k[96:], 30.0, initial=(first.top_oil_rise[0, -1], first.hot_spot_rise[0, -1]))
    for d, (lo, hi) in enumerate([(0, 96), (96, 192)]):
        assert out["equivalent_aging"][d + 1] == pytest.approx(rest.aging_factor[0, lo:hi].mean(), rel=1e-12)
        assert out["hot_spot_max_c"][d + 1] == pytest.approx(rest.hot_spot_peak[0, lo:hi].max(), rel=1e-12)
    # Day by day with carry-over equals the continuous run: each day alone, from the written end
    # state of the day before.
    for d in (1, 2):
        alone = ta.daily_aging(
            _profile([r for r in ev if r[1] == days[d]]),
            daily.slice(d, 1),
            initial_state=out.slice(d - 1, 1),
            **kwargs,
        )
        assert alone["equivalent_aging"][0] == pytest.approx(out["equivalent_aging"][d], rel=1e-12)
    # The steady-state start (the day before unknown) forgets the heat of the evening before: the
    # day comes out cooler and ages less than with carry-over.
    steady = ta.daily_aging(_profile([r for r in ev if r[1] == days[1]]), daily.slice(1, 1), **kwargs)
    assert steady["hot_spot_max_c"][0] < out["hot_spot_max_c"][1] - 1
    assert steady["equivalent_aging"][0] < out["equivalent_aging"][1]
