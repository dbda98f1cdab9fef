"""Forecast benchmark and backtest on the synthetic utility (issue 28).

    .venv/bin/python bench/forecast_bench.py [--meters 2000] [--backtest]

- time and peak memory (tracemalloc of numpy/polars-in-Python allocations, plus the process's
  max RSS) of the ten-year forecast (learn_behavior + fit_adoption + overload_forecast) for a
  utility of --meters meters with one simulated year of sessions;
- --backtest: a three-year feed with a known adoption curve (simulator.AdoptionCurve), fitted on
  the first two years, forecast month by month over the third: the calibration (share of
  transformer-months whose observed EV peak lies under P50 / P90).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import date, timedelta

import polars as pl

from ev_assets.core import forecast
from ev_assets.core.transformer_aging import DEFAULT_BASE_LOAD_PU
from ev_assets.settings import Settings
from ev_assets.synthetic import simulator, utility

TZ = "America/New_York"
START = date(2024, 1, 1)


def simulated(meters: int, days: int, curve: simulator.AdoptionCurve | None, seed: int = 5, realization: int = 0):
    ref = utility.generate_utility(meters, seed=7, start=START)
    config = simulator.SimulationConfig(adoption=curve, realization=realization)
    sessions = simulator.simulate_sessions(ref, START, days, seed, config).with_columns(
        pl.lit("complete").alias("status"), pl.lit(None, dtype=pl.String).alias("quality_flags")
    )
    return ref, sessions


def parameters(settings: Settings) -> forecast.ForecastParameters:
    return forecast.ForecastParameters(
        draws=settings.forecast_draws,
        seed=settings.forecast_seed,
        library_days=settings.forecast_library_days,
        base_load_pu=DEFAULT_BASE_LOAD_PU,
        base_load_scale=settings.base_load_scale,
        power_factor=settings.power_factor,
        planning_threshold=settings.planning_threshold,
        managed_share=settings.forecast_managed_share,
        managed_window=forecast.parse_window(settings.forecast_managed_window),
    )


def time_forecast(meters: int) -> dict:
    settings = Settings()
    ref, sessions = simulated(meters, 366, simulator.AdoptionCurve())
    as_of = START + timedelta(days=365)
    saturation, multiplier = forecast.parse_scenarios(settings.forecast_adoption_scenarios)["base"]
    began = time.perf_counter()
    behavior = forecast.learn_behavior(sessions, tz=TZ, history_end=as_of)
    premises = forecast.premise_feeders(ref["service_points"], ref["transformers"], as_of)
    first_seen = forecast.first_seen_by_premise(behavior, premises)
    adoption = forecast.fit_adoption(
        first_seen, premises, saturation=saturation, as_of=as_of, rate_multiplier=multiplier
    )
    inputs = forecast.transformer_inputs(ref["service_points"], ref["transformers"], first_seen, as_of)
    out = forecast.overload_forecast(
        behavior, adoption, inputs, forecast.yearly_periods(as_of, settings.forecast_years), parameters(settings)
    )
    out = forecast.with_first_years(out)
    seconds = time.perf_counter() - began
    return {
        "meters": meters,
        "sessions": sessions.height,
        "transformers": inputs.height,
        "rows": out.height,
        "seconds": round(seconds, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "transformers_p50_overload_within_horizon": out.filter(pl.col("first_year_p50").is_not_null())[
            "transformer_id"
        ].n_unique(),
    }


def run_backtest(meters: int) -> dict:
    settings = Settings()
    curve = simulator.AdoptionCurve()
    ref, sessions = simulated(meters, 3 * 365 + 1, curve)
    cutoff = date(2025, 12, 31)
    saturation, multiplier = forecast.parse_scenarios(settings.forecast_adoption_scenarios)["base"]
    began = time.perf_counter()
    result = forecast.backtest(
        sessions,
        ref["service_points"],
        ref["transformers"],
        tz=TZ,
        cutoff=cutoff,
        months=12,
        parameters=parameters(settings),
        saturation=saturation,
        rate_multiplier=multiplier,
    )
    fit = result.adoption
    return {
        "meters": meters,
        "sessions": sessions.height,
        "cutoff": cutoff.isoformat(),
        "transformer_months": result.calibration.transformer_months,
        "share_under_p50": round(result.calibration.share_under_p50, 3),
        "share_under_p90": round(result.calibration.share_under_p90, 3),
        "true_curve": {
            "saturation": curve.saturation,
            "k": curve.rate_per_year,
            "t0": forecast.decimal_year(curve.midpoint),
        },
        "fitted_utility": {"k": round(fit.utility_rate_per_year, 3), "t0": round(fit.utility_midpoint_year, 3)},
        "true_share_at_end": round(curve.share_on(date(2026, 12, 31)), 4),
        "fitted_share_at_end": round(float(fit.share(["?"], date(2026, 12, 31))[0]), 4),
        "seconds": round(time.perf_counter() - began, 2),
    }


def first_overload_truth(meters: int, years: int = 10, realizations: int = 1) -> dict:
    """The year of first overload per transformer, forecast against the simulator's truth.

    Truth: the simulator (its known AdoptionCurve) run over the forecast's years too, each
    transformer's realized coincident 15-minute peak of EV load (the planning tables' load shape) +
    the base load of the aging model (per-unit profile by local hour x rating; EV kVA = kW / power
    factor) per calendar year; its first year above EV_PLANNING_THRESHOLD x rating. Forecast: fitted
    on 2024-2025 (base scenario), first_year_p50. A transformer "overloads" when either says so
    within the horizon; it matches when both give the same year (and within one year, reported too).
    """
    settings = Settings()
    curve = simulator.AdoptionCurve()
    history_end = date(2025, 12, 31)
    horizon_end = date(history_end.year + years, 12, 31)
    ref, sessions = simulated(meters, (horizon_end - START).days + 1, curve)
    local_day = pl.col("start_time").dt.convert_time_zone(TZ).dt.date()
    history = sessions.filter(local_day <= history_end)
    saturation, multiplier = forecast.parse_scenarios(settings.forecast_adoption_scenarios)["base"]
    behavior = forecast.learn_behavior(history, tz=TZ, history_end=history_end)
    premises = forecast.premise_feeders(ref["service_points"], ref["transformers"], history_end)
    first_seen = forecast.first_seen_by_premise(behavior, premises)
    adoption = forecast.fit_adoption(
        first_seen, premises, saturation=saturation, as_of=history_end, rate_multiplier=multiplier
    )
    inputs = forecast.transformer_inputs(ref["service_points"], ref["transformers"], first_seen, history_end)
    predicted = (
        forecast.with_first_years(
            forecast.overload_forecast(
                behavior, adoption, inputs, forecast.yearly_periods(history_end, years), parameters(settings)
            )
        )
        .group_by("transformer_id")
        .agg(pl.col("first_year_p50").first())
    )
    # Truth, year by year (bounded memory), in each realization of the same EVs' days; the true first
    # year is the first in which at least half the realizations overload (a median, like first_year_p50).
    base = pl.DataFrame(
        {"_hour": list(range(24)), "_pu": list(DEFAULT_BASE_LOAD_PU)}, schema={"_hour": pl.Int8, "_pu": pl.Float64}
    )
    ratings = inputs.select("transformer_id", "kva_rating")
    over = []
    for realization in range(realizations):
        if realization:
            _, sessions = simulated(meters, (horizon_end - START).days + 1, curve, realization=realization)
        for year in range(history_end.year + 1, horizon_end.year + 1):
            future = sessions.filter(local_day.dt.year() == year).with_columns(
                pl.lit(None, dtype=pl.String).alias("feeder_id"),
                pl.lit(None, dtype=pl.String).alias("substation_id"),
                (pl.col("energy_wh") / 1000 / pl.col("duration_h")).alias("average_kw"),
            )
            intervals = forecast.load_profile.interval_loads(future)
            per = (
                intervals.group_by("transformer_id", "interval_start")
                .agg(pl.col("kw").sum())
                .with_columns(pl.col("interval_start").dt.convert_time_zone(TZ).dt.hour().cast(pl.Int8).alias("_hour"))
                .join(base, on="_hour")
                .join(ratings, on="transformer_id")
                .with_columns(
                    (pl.col("_pu") * pl.col("kva_rating") + pl.col("kw") / settings.power_factor).alias("kva")
                )
                .group_by("transformer_id")
                .agg(pl.col("kva").max(), pl.col("kva_rating").first())
            )
            over.append(
                per.filter(pl.col("kva") > pl.col("kva_rating") * settings.planning_threshold).select(
                    "transformer_id", pl.lit(year).alias("year"), pl.lit(realization).alias("realization")
                )
            )
    # A realization that overloads in a year counts as overloaded in every later year too (first year).
    firsts = pl.concat(over).group_by("transformer_id", "realization").agg(pl.col("year").min().alias("first"))
    years_axis = list(range(history_end.year + 1, horizon_end.year + 1))
    truth = median_first_year(firsts, years_axis, realizations)
    both, exact, within_one = agreement(predicted.rename({"first_year_p50": "candidate"}), truth)
    both = both.rename({"candidate": "first_year_p50"})
    return {
        **({"noise_ceiling": noise_ceiling(firsts, years_axis, realizations)} if realizations > 1 else {}),
        "meters": meters,
        "realizations": realizations,
        "transformers": inputs.height,
        "overloading_by_either": both.height,
        "overloading_in_truth": int(both["true_first_year"].is_not_null().sum()),
        "overloading_in_forecast": int(both["first_year_p50"].is_not_null().sum()),
        "same_first_year_share": round(float(exact.mean()), 3),
        "within_one_year_share": round(float(within_one.mean()), 3),
        "true_first_year_counts": truth.group_by("true_first_year").len().sort("true_first_year").rows(),
        "forecast_first_year_counts": predicted.drop_nulls()
        .group_by("first_year_p50")
        .len()
        .sort("first_year_p50")
        .rows(),
    }


def median_first_year(firsts: pl.DataFrame, years_axis: list[int], realizations: int) -> pl.DataFrame:
    """transformer_id, true_first_year: the first year in which at least half of `realizations`
    realizations (rows of `firsts`: transformer_id, realization, first) have overloaded."""
    return (
        firsts.join(pl.DataFrame({"year": years_axis}), how="cross")
        .filter(pl.col("first") <= pl.col("year"))
        .group_by("transformer_id", "year")
        .agg(pl.len().alias("n"))
        .filter(pl.col("n") * 2 >= realizations)
        .group_by("transformer_id")
        .agg(pl.col("year").min().alias("true_first_year"))
    )


def agreement(candidate: pl.DataFrame, truth: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
    """Over the transformers that overload by either (candidate: transformer_id, candidate year;
    truth: transformer_id, true_first_year): the joined rows, same-year and within-one-year flags."""
    both = candidate.join(truth, on="transformer_id", how="full", coalesce=True).filter(
        pl.col("candidate").is_not_null() | pl.col("true_first_year").is_not_null()
    )
    exact = (both["candidate"] == both["true_first_year"]).fill_null(False)
    within_one = ((both["candidate"] - both["true_first_year"]).abs() <= 1).fill_null(False)
    return both, exact, within_one


def noise_ceiling(firsts: pl.DataFrame, years_axis: list[int], realizations: int) -> dict:
    """How well a perfect one-realization answer can match the truth: each realization's own first
    year against the median first year of the OTHER realizations (same definition as the truth),
    pooled over the realizations (each over the transformers overloading by either)."""
    exact_all, within_all, counted = 0, 0, 0
    for held_out in range(realizations):
        others = firsts.filter(pl.col("realization") != held_out)
        truth = median_first_year(others, years_axis, realizations - 1)
        one = firsts.filter(pl.col("realization") == held_out).select(
            "transformer_id", pl.col("first").alias("candidate")
        )
        both, exact, within_one = agreement(one, truth)
        exact_all += int(exact.sum())
        within_all += int(within_one.sum())
        counted += both.height
    return {
        "transformers_counted": counted,
        "same_first_year_share": round(exact_all / max(counted, 1), 3),
        "within_one_year_share": round(within_all / max(counted, 1), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--backtest", action="store_true")
    parser.add_argument("--truth", action="store_true", help="first year of overload against the simulator's truth")
    parser.add_argument("--realizations", type=int, default=1, help="--truth: realizations of the EVs' days")
    args = parser.parse_args()
    if args.truth:
        print(json.dumps(first_overload_truth(args.meters, realizations=args.realizations)))
    else:
        print(json.dumps(run_backtest(args.meters) if args.backtest else time_forecast(args.meters), indent=2))
