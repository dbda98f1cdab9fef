"""Forecast step: refresh ev_charging_behavior and transformer_overload_forecast from the sessions and
the reference data, and backtest the forecast on the history (ev_assets.core.forecast).

Read in one transaction and replaced in one (a reader sees the old snapshot or the new one). The
whole history of complete sessions is read: a utility of 20,000 meters and a year of sessions is about
600,000 rows (a few tens of MB in polars).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import polars as pl
import sqlalchemy as sa

from ev_assets.core import forecast
from ev_assets.pipeline.config import PipelineSettings, utc_now
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_BEHAVIOR,
    EV_CHARGING_SESSIONS,
    REF_SERVICE_POINTS,
    REF_TRANSFORMERS,
    TRANSFORMER_OVERLOAD_FORECAST,
)

SESSION_COLUMNS = (
    "meter_id",
    "premise_id",
    "transformer_id",
    "status",
    "start_time",
    "end_time",
    "charge_w",
    "energy_wh",
    "quality_flags",
)
# The scenario the backtest, the chart and the planner's first look use.
BASE_SCENARIO = "base"
# The history before a backtest's cut-off must span at least this many days to fit anything.
MIN_BACKTEST_HISTORY_DAYS = 60


@dataclass
class ForecastReport:
    as_of: date | None = None
    behavior_rows: int = 0
    forecast_rows: int = 0
    behavior: pl.DataFrame = field(default_factory=pl.DataFrame)
    forecast: pl.DataFrame = field(default_factory=pl.DataFrame)
    calibration: forecast.Calibration | None = None
    backtest_cutoff: date | None = None
    backtest_note: str = ""


def parameters(settings: PipelineSettings) -> forecast.ForecastParameters:
    return forecast.ForecastParameters(
        draws=settings.forecast_draws,
        seed=settings.forecast_seed,
        library_days=settings.forecast_library_days,
        base_load_pu=settings.base_load_pu,
        base_load_scale=settings.base_load_scale,
        power_factor=settings.power_factor,
        planning_threshold=settings.planning_threshold,
        managed_share=settings.forecast_managed_share,
        managed_window=forecast.parse_window(settings.forecast_managed_window),
    )


def backtest_cutoff(history_end: date, months: int) -> date:
    """The day before the first of the last `months` whole months of a history ending on history_end."""
    following = history_end + timedelta(days=1)
    last_whole_month_end = following.replace(day=1) - timedelta(days=1)
    first = last_whole_month_end.replace(day=1)
    for _ in range(months - 1):
        first = (first - timedelta(days=1)).replace(day=1)
    return first - timedelta(days=1)


def run_forecast(
    sessions: pl.DataFrame,
    service_points: pl.DataFrame,
    transformers: pl.DataFrame,
    settings: PipelineSettings,
    *,
    now: datetime,
) -> ForecastReport:
    """The step's computation without the database: behavior, every scenario's forecast, the backtest."""
    report = ForecastReport()
    tz = settings.timezone
    behavior = forecast.learn_behavior(
        sessions, tz=tz, load_shape=settings.load_shape, idle_ratio=settings.load_shape_idle_ratio
    )
    report.as_of = behavior.history_end
    if report.as_of is None or behavior.evs.is_empty():
        report.backtest_note = "no trusted complete session: nothing to learn from"
        return report
    report.behavior = forecast.behavior_table(behavior).with_columns(
        pl.lit(report.as_of).alias("history_end"), pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("updated_at")
    )
    params = parameters(settings)
    premises = forecast.premise_feeders(service_points, transformers, report.as_of)
    first_seen = forecast.first_seen_by_premise(behavior, premises)
    inputs = forecast.transformer_inputs(service_points, transformers, first_seen, report.as_of)
    periods = forecast.yearly_periods(report.as_of, settings.forecast_years)
    scenarios = forecast.parse_scenarios(settings.forecast_adoption_scenarios)
    frames = []
    for name, (saturation, multiplier) in scenarios.items():
        adoption = forecast.fit_adoption(
            first_seen,
            premises,
            saturation=saturation,
            as_of=report.as_of,
            prior_evs=settings.forecast_adoption_prior_evs,
            rate_multiplier=multiplier,
        )
        yearly = forecast.with_first_years(forecast.overload_forecast(behavior, adoption, inputs, periods, params))
        frames.append(yearly.rename({"period": "year"}).with_columns(pl.lit(name).alias("scenario")))
    report.forecast = pl.concat(frames).with_columns(
        pl.lit(report.as_of).alias("as_of_date"), pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("updated_at")
    )
    cutoff = backtest_cutoff(report.as_of, settings.forecast_backtest_months)
    first_day = first_seen["first_seen"].min()
    if (cutoff - first_day).days < MIN_BACKTEST_HISTORY_DAYS:
        report.backtest_note = (
            f"history {first_day}..{report.as_of} too short for a backtest of {settings.forecast_backtest_months} "
            f"months (needs {MIN_BACKTEST_HISTORY_DAYS} days before the cut-off {cutoff})"
        )
        return report
    saturation, multiplier = scenarios.get(BASE_SCENARIO, next(iter(scenarios.values())))
    result = forecast.backtest(
        sessions,
        service_points,
        transformers,
        tz=tz,
        cutoff=cutoff,
        months=settings.forecast_backtest_months,
        parameters=params,
        saturation=saturation,
        rate_multiplier=multiplier,
        prior_evs=settings.forecast_adoption_prior_evs,
        load_shape=settings.load_shape,
        idle_ratio=settings.load_shape_idle_ratio,
    )
    report.calibration, report.backtest_cutoff = result.calibration, cutoff
    return report


def refresh_forecast(
    warehouse: Warehouse, settings: PipelineSettings, *, now: datetime | None = None
) -> ForecastReport:
    """Replace ev_charging_behavior and transformer_overload_forecast (delete, then insert)."""
    warehouse.ensure_timezone(settings.timezone)
    now = now or utc_now()
    status = warehouse.column(EV_CHARGING_SESSIONS, "status")
    with warehouse.transaction() as conn:
        sessions = warehouse.read(EV_CHARGING_SESSIONS, status == "complete", conn=conn, columns=SESSION_COLUMNS)
        service_points = warehouse.read(REF_SERVICE_POINTS, conn=conn)
        transformers = warehouse.read(REF_TRANSFORMERS, conn=conn)
        report = run_forecast(sessions, service_points, transformers, settings, now=now)
        warehouse.delete(conn, EV_CHARGING_BEHAVIOR, sa.true())
        warehouse.delete(conn, TRANSFORMER_OVERLOAD_FORECAST, sa.true())
        if report.behavior.height:
            report.behavior_rows = warehouse.insert(
                conn, EV_CHARGING_BEHAVIOR, EV_CHARGING_BEHAVIOR.conform(report.behavior)
            )
        if report.forecast.height:
            report.forecast_rows = warehouse.insert(
                conn, TRANSFORMER_OVERLOAD_FORECAST, TRANSFORMER_OVERLOAD_FORECAST.conform(report.forecast)
            )
    return report


def first_overloading(forecast_rows: pl.DataFrame, count: int = 5, scenario: str = BASE_SCENARIO) -> pl.DataFrame:
    """The `count` transformers of `scenario` that overload first (first_year_p50, then the highest
    P(exceed threshold) in that year), one row each."""
    rows = forecast_rows.filter((pl.col("scenario") == scenario) & pl.col("first_year_p50").is_not_null())
    ranked = (
        rows.filter(pl.col("year") == pl.col("first_year_p50"))
        .sort(["first_year_p50", "p_exceed_threshold", "transformer_id"], descending=[False, True, False])
        .head(count)
    )
    return ranked
