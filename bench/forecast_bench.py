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


def simulated(meters: int, days: int, curve: simulator.AdoptionCurve | None, seed: int = 5):
    ref = utility.generate_utility(meters, seed=7, start=START)
    config = simulator.SimulationConfig(adoption=curve) if curve else simulator.SimulationConfig()
    sessions = simulator.simulate_sessions(ref, START, days, seed, config).with_columns(
        pl.lit("complete").alias("status"), pl.lit(None, dtype=pl.String).alias("quality_flags")
    )
    return ref, sessions


def parameters(settings: Settings) -> forecast.ForecastParameters:
    return forecast.ForecastParameters(
        draws=settings.forecast_draws,
        seed=settings.forecast_seed,
        library_days=settings.forecast_library_days,
        library_replicates=settings.forecast_library_replicates,
        base_load_pu=DEFAULT_BASE_LOAD_PU,
        base_load_scale=settings.base_load_scale,
        power_factor=settings.power_factor,
        planning_threshold=settings.planning_threshold,
        managed_share=settings.forecast_managed_share,
        managed_window=forecast.parse_window(settings.forecast_managed_window),
    )


def time_forecast(meters: int) -> dict:
    settings = Settings()
    ref, sessions = simulated(meters, 365, None)
    as_of = START + timedelta(days=364)
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--backtest", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run_backtest(args.meters) if args.backtest else time_forecast(args.meters), indent=2))
