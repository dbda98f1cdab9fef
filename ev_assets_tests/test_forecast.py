"""The forecast's parts on cases small enough to compute by hand (ev_assets.core.forecast)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ev_assets.core import forecast
from ev_assets.core.transformer_aging import DEFAULT_BASE_LOAD_PU

TZ = "UTC"


def sessions_frame(rows: list[tuple[str, datetime, float, float, str | None]]) -> pl.DataFrame:
    """(premise, start UTC, hours, kW, quality flags) -> ev_charging_sessions-like rows."""
    return pl.DataFrame(
        {
            "meter_id": [f"M{r[0]}" for r in rows],
            "premise_id": [r[0] for r in rows],
            "transformer_id": ["T1"] * len(rows),
            "status": ["complete"] * len(rows),
            "start_time": [r[1] for r in rows],
            "end_time": [r[1] + timedelta(hours=r[2]) for r in rows],
            "charge_w": [r[3] * 1000 for r in rows],
            "energy_wh": [r[2] * r[3] * 1000 for r in rows],
            "quality_flags": [r[4] for r in rows],
        },
        schema_overrides={"start_time": pl.Datetime("us", "UTC"), "end_time": pl.Datetime("us", "UTC")},
    )


def at(day: int, hour: int) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


def test_sessions_per_ev_day_count_every_day_an_ev_was_present():
    # EV A first seen Monday 1 Jan 2024, EV B on Saturday 6 Jan; the history ends Sunday 7 Jan.
    # A is present 7 days (5 weekdays, 2 weekend days), B 2 weekend days: 5 weekday EV-days and 4
    # weekend EV-days. A charges Monday and Wednesday, B Saturday; a flagged session of A on
    # Thursday is kept out (and its day still counts as an EV-day).
    rows = [
        ("A", at(1, 18), 2.0, 7.2, None),
        ("A", at(3, 19), 2.0, 7.2, None),
        ("A", at(4, 19), 2.0, 7.2, "power_above_charge_w"),
        ("B", at(6, 17), 3.0, 7.2, None),
    ]
    behavior = forecast.learn_behavior(sessions_frame(rows), tz=TZ, history_end=date(2024, 1, 7))
    rates = behavior.rates.filter((pl.col("charger_level") == "level_2") & (pl.col("season") == "winter"))
    by_day_type = {r["day_type"]: r for r in rates.iter_rows(named=True)}
    assert by_day_type["weekday"]["ev_days"] == 5
    assert by_day_type["weekday"]["session_count"] == 2
    assert by_day_type["weekday"]["sessions_per_ev_day"] == pytest.approx(2 / 5)
    assert by_day_type["weekend"]["ev_days"] == 4
    assert by_day_type["weekend"]["sessions_per_ev_day"] == pytest.approx(1 / 4)
    # Nothing was seen in other seasons or levels: no EV-days, no rate.
    others = behavior.rates.filter(pl.col("season") != "winter")
    assert others["session_count"].sum() == 0
    table = forecast.behavior_table(behavior)
    assert table["session_count"].sum() == 3
    weekday_18 = table.filter((pl.col("day_type") == "weekday") & (pl.col("plug_in_hour") == 18)).row(0, named=True)
    assert weekday_18["plug_in_share"] == pytest.approx(0.5)
    assert weekday_18["energy_kwh_p50"] == pytest.approx(14.4)


def test_logistic_fit_recovers_the_curve_of_synthetic_first_seen_dates():
    # 30,000 premises on 3 feeders; each adopts at the time its uniform draw u reaches the curve
    # S(t) = 0.5 / (1 + exp(-0.9 (t - 2026.5))) (never when u >= 0.5). Observed 2022-2025.
    saturation, k, t0 = 0.5, 0.9, 2026.5
    rng = np.random.default_rng(3)
    n = 30_000
    u = rng.random(n)
    adopts = u < saturation
    t = t0 - np.log(saturation / u[adopts] - 1) / k
    premises = pl.DataFrame({"premise_id": [f"P{i}" for i in range(n)], "feeder_id": [f"F{i % 3}" for i in range(n)]})
    start = date(2022, 1, 1)
    as_of = date(2025, 12, 31)
    day = [start + timedelta(days=int((x - 2022.0) * 365.25)) for x in t]
    first_seen = (
        premises.filter(pl.Series(adopts))
        .with_columns(pl.Series("first_seen", day, dtype=pl.Date))
        .with_columns(pl.max_horizontal("first_seen", pl.lit(start)).alias("first_seen"))
    )
    fit = forecast.fit_adoption(first_seen, premises, saturation=saturation, as_of=as_of, prior_evs=10)
    # Tolerance: k within 10 %, t0 within 0.25 years, for the utility and every feeder.
    assert fit.utility_rate_per_year == pytest.approx(k, rel=0.10)
    assert fit.utility_midpoint_year == pytest.approx(t0, abs=0.25)
    for row in fit.feeders.iter_rows(named=True):
        assert row["rate_per_year"] == pytest.approx(k, rel=0.10), row
        assert row["midpoint_year"] == pytest.approx(t0, abs=0.25), row
    # The curve itself: the modelled share at as_of is the true one to 1 point.
    assert fit.share(["F0"], as_of)[0] == pytest.approx(forecast.logistic(2026.0, saturation, k, t0), abs=0.01)


def test_feeder_with_little_history_follows_the_utility():
    premises = pl.DataFrame(
        {"premise_id": [f"P{i}" for i in range(1010)], "feeder_id": ["BIG"] * 1000 + ["SMALL"] * 10}
    )
    days = [date(2024, 1, 1) + timedelta(days=int(i * 0.9)) for i in range(800)]
    first_seen = pl.DataFrame(
        {"premise_id": [f"P{i}" for i in range(800)] + ["P1000"], "feeder_id": ["BIG"] * 800 + ["SMALL"]}
    ).with_columns(pl.Series("first_seen", days + [date(2025, 6, 1)], dtype=pl.Date))
    fit = forecast.fit_adoption(first_seen, premises, saturation=0.9, as_of=date(2025, 12, 31), prior_evs=10)
    small = fit.feeders.filter(pl.col("feeder_id") == "SMALL").row(0, named=True)
    big = fit.feeders.filter(pl.col("feeder_id") == "BIG").row(0, named=True)
    assert small["own_weight"] < 0.2 < 0.9 < big["own_weight"]
    assert small["rate_per_year"] == pytest.approx(fit.utility_rate_per_year, rel=0.25)


def deterministic_behavior(rate: float = 1.0) -> forecast.Behavior:
    """EVs A and B plug in at 18:00 and draw 7 kW for 2 h on every day they charge: every day of a
    week seen, and (the rates set by hand) with probability `rate` on every future day."""
    rows = [
        (premise, datetime(2024, 1, day, 18, tzinfo=UTC), 2.0, 7.0, None) for day in range(1, 8) for premise in "AB"
    ]
    behavior = forecast.learn_behavior(sessions_frame(rows), tz=TZ)
    assert behavior.evs["sessions_per_ev_day"].to_list() == [1.0, 1.0]  # 7 sessions in 7 days each
    evs = behavior.evs.with_columns(pl.lit(rate).alias("sessions_per_ev_day"))
    return forecast.Behavior(behavior.sessions, behavior.rates, evs, behavior.history_end)


def test_one_transformer_with_two_deterministic_evs_gives_the_hand_computed_peak():
    behavior = deterministic_behavior()
    premises = pl.DataFrame({"premise_id": ["A", "B"], "feeder_id": ["F1", "F1"]})
    first_seen = premises.with_columns(pl.lit(date(2024, 1, 1)).alias("first_seen"))
    # Both premises already have their EV: no adoption can add one.
    adoption = forecast.fit_adoption(first_seen, premises, saturation=1.0, as_of=date(2024, 12, 31))
    transformers = pl.DataFrame(
        {"transformer_id": ["T1"], "feeder_id": ["F1"], "kva_rating": [25.0], "premises": [2], "evs_now": [2]}
    )
    parameters = forecast.ForecastParameters(
        draws=50,
        library_days=200,
        base_load_pu=DEFAULT_BASE_LOAD_PU,
        power_factor=0.9,
        managed_share=1.0,
        managed_window=(0, 120),
    )
    out = forecast.overload_forecast(
        behavior, adoption, transformers, forecast.yearly_periods(date(2024, 12, 31), 2), parameters
    )
    assert out["period"].to_list() == [2025, 2026]
    row = out.row(0, named=True)
    # By hand: two EVs at 7 kW from 18:00 to 20:00: 14 kW. With base load, the 19:00-20:00 hour is the
    # largest: 0.60 pu x 25 kVA = 15 kVA + 14 kW / 0.9 = 30.556 kVA, above the 25 kVA rating every day.
    assert row["expected_evs"] == pytest.approx(2.0)
    assert row["ev_peak_kw_p50"] == pytest.approx(14.0)
    assert row["ev_peak_kw_p90"] == pytest.approx(14.0)
    assert row["peak_kva_p50"] == pytest.approx(15.0 + 14.0 / 0.9)
    assert row["peak_kva_p90"] == pytest.approx(15.0 + 14.0 / 0.9)
    assert row["p_exceed_rating"] == 1.0
    # Managed: both sessions start in 00:00-02:00 and end by 04:00 at the latest; the peak is then the
    # base load's 19:00 0.60 pu (15 kVA) or, at night, at most 0.30 pu x 25 + 14 / 0.9 = 23.06 kVA.
    assert row["peak_kva_p90_managed"] <= 25.0
    assert row["p_exceed_rating_managed"] == 0.0
    years = forecast.with_first_years(out)
    first = years.row(0, named=True)
    assert first["first_year_p50"] == 2025
    assert first["first_year_p50_managed"] is None
    assert first["years_deferred"] == 2  # to 2027 at least: beyond the two-year horizon


def test_forecast_is_seeded_and_reproducible():
    behavior = deterministic_behavior(rate=0.4)
    premises = pl.DataFrame({"premise_id": [f"P{i}" for i in range(8)], "feeder_id": ["F1"] * 8})
    first_seen = premises.head(2).with_columns(pl.lit(date(2024, 1, 1)).alias("first_seen"))
    adoption = forecast.fit_adoption(first_seen, premises, saturation=0.6, as_of=date(2024, 12, 31))
    transformers = pl.DataFrame(
        {
            "transformer_id": ["T1", "T2"],
            "feeder_id": ["F1", "F1"],
            "kva_rating": [25.0, None],
            "premises": [8, 8],
            "evs_now": [2, 0],
        }
    )
    parameters = forecast.ForecastParameters(draws=200, library_days=100, base_load_pu=DEFAULT_BASE_LOAD_PU)
    periods = forecast.yearly_periods(date(2024, 12, 31), 3)
    one = forecast.overload_forecast(behavior, adoption, transformers, periods, parameters)
    two = forecast.overload_forecast(behavior, adoption, transformers, periods, parameters)
    assert one.equals(two)
    unrated = one.filter(pl.col("transformer_id") == "T2")
    assert unrated["p_exceed_rating"].null_count() == 3 and unrated["ev_peak_kw_p90"].max() > 0
    rated = one.filter(pl.col("transformer_id") == "T1").sort("period")
    # EVs only arrive: expected EVs and the P90 peak do not fall from year to year.
    assert rated["expected_evs"].diff().drop_nulls().min() >= 0
    assert rated["ev_peak_kw_p90"].diff().drop_nulls().min() >= -1e-9


def test_simulator_adoption_curve_grows_the_evs_it_says():
    from ev_assets.synthetic import simulator, utility

    ref = utility.generate_utility(3000, seed=7)
    curve = simulator.AdoptionCurve(saturation=0.5, rate_per_year=0.9, midpoint=date(2025, 1, 1))
    config = simulator.SimulationConfig(adoption=curve)
    population = simulator.ev_population(ref, 4, config)
    homes = ref["service_points"]["service_point_id"].n_unique()
    for day in (date(2024, 1, 1), date(2025, 1, 1), date(2026, 6, 1)):
        adopted = (population["adopted_day"] <= (day - date(1970, 1, 1)).days).sum() / homes
        assert adopted == pytest.approx(curve.share_on(day), abs=0.03)
    # No session before its home's adoption day.
    sessions = simulator.simulate_sessions(ref, date(2024, 1, 1), 60, 4, config)
    first = (
        sessions.with_columns(pl.col("start_time").dt.convert_time_zone(config.timezone).dt.date().alias("d"))
        .group_by("service_point_id")
        .agg(pl.col("d").min())
        .join(population.select("service_point_id", "adopted_day"), on="service_point_id")
    )
    assert (first["d"].cast(pl.Int64) >= first["adopted_day"]).all()
    # Later adopters have fewer Level 1 chargers (below 2 kW).
    late = population.filter(pl.col("adopted_day") > (date(2026, 1, 1) - date(1970, 1, 1)).days)
    early = population.filter(pl.col("adopted_day") < (date(2024, 1, 1) - date(1970, 1, 1)).days)
    assert (late["charger_kw"] < 2).mean() < (early["charger_kw"] < 2).mean()
    # Without a curve, every EV is there from the start (the default demo's population).
    default = simulator.ev_population(ref, 4)
    assert (default["adopted_day"] < 0).all()
