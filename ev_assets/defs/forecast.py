"""Forecast area: the charging behavior learned from the sessions, the ten-year overload forecast per
transformer, and the check of the forecast against what happened (a backtest on the history).

Both tables are one snapshot, refreshed together by `forecast_job`: by hand, or once a local day by
`daily_forecast`, after the nightly daily load and the planning snapshots (a ten-year view needs no
fresher input)."""

import dagster as dg
import polars as pl

from ev_assets import pipeline
from ev_assets.defs import charts
from ev_assets.defs.ingest.assets import ev_charging_sessions
from ev_assets.defs.metadata import markdown_table, rounded, table_asset_spec, table_metadata
from ev_assets.defs.reference import reference_tables
from ev_assets.defs.resources import PipelineConfig, WarehouseResource
from ev_assets.defs.runs import daily_snapshot_schedule, record_worker, retry_when_transient
from ev_assets.pipeline.forecast import BASE_SCENARIO, first_overloading
from ev_assets.warehouse import tables

CHART_TRANSFORMERS = 5
CALIBRATION_CHECK = "backtest_calibration"


@dg.multi_asset(
    specs=[
        table_asset_spec(tables.EV_CHARGING_BEHAVIOR, "planning", deps=[ev_charging_sessions]),
        table_asset_spec(
            tables.TRANSFORMER_OVERLOAD_FORECAST,
            "planning",
            deps=[ev_charging_sessions, reference_tables, dg.AssetKey(tables.EV_CHARGING_BEHAVIOR.name)],
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            CALIBRATION_CHECK,
            asset=tables.TRANSFORMER_OVERLOAD_FORECAST.name,
            description=(
                "Backtest: fitted on the history up to EV_FORECAST_BACKTEST_MONTHS whole months before its end, the "
                "forecast of each month after; the share of transformer-months (with an EV at the cut-off) whose "
                "observed EV peak lies under the forecast P50 and P90 must be within EV_FORECAST_CALIBRATION_TOLERANCE "
                "of 0.5 and 0.9."
            ),
        )
    ],
)
def transformer_overload_forecast(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, pipeline_config: PipelineConfig
):
    """ev_charging_behavior (how this utility's EVs charge) and transformer_overload_forecast (per
    transformer, scenario and year: expected EVs, P50/P90 peak, probability of overload, first year
    likely, what managed charging defers), replaced in one transaction; the backtest's calibration."""
    record_worker(context)
    settings = pipeline_config.settings()
    with retry_when_transient(context):
        report = pipeline.refresh_forecast(warehouse.get(), settings)
    as_of = {"as_of_date": report.as_of.isoformat() if report.as_of else None}
    yield dg.MaterializeResult(
        asset_key=tables.EV_CHARGING_BEHAVIOR.name,
        metadata=table_metadata(tables.EV_CHARGING_BEHAVIOR, report.behavior_rows, **as_of, **behavior_summary(report)),
    )
    yield dg.MaterializeResult(
        asset_key=tables.TRANSFORMER_OVERLOAD_FORECAST.name,
        metadata=table_metadata(
            tables.TRANSFORMER_OVERLOAD_FORECAST, report.forecast_rows, **as_of, **forecast_pictures(report.forecast)
        ),
    )
    yield calibration_result(report, settings.forecast_calibration_tolerance)


def behavior_summary(report: pipeline.ForecastReport) -> dict:
    """Sessions per EV-day by level, day type and season, with their sample sizes."""
    if not report.behavior.height:
        return {}
    rates = (
        report.behavior.group_by("charger_level", "day_type", "season")
        .agg(pl.col("group_session_count").first(), pl.col("ev_days").first(), pl.col("sessions_per_ev_day").first())
        .sort("charger_level", "day_type", "season")
    )
    return {"sessions_per_ev_day": dg.MetadataValue.md(markdown_table(rounded(rates)))}


def forecast_pictures(rows: pl.DataFrame) -> dict:
    """What a planner reads in the UI: the transformers of the base scenario that overload first, as
    a markdown table and a chart of P50/P90 peak by year against the rating."""
    if not rows.height:
        return {}
    first = first_overloading(rows, CHART_TRANSFORMERS)
    out: dict = {
        "transformers_likely_overloaded_in_horizon": int(
            rows.filter((pl.col("scenario") == BASE_SCENARIO) & pl.col("first_year_p50").is_not_null())[
                "transformer_id"
            ].n_unique()
        )
    }
    if not first.height:
        return out
    shown = first.select(
        "transformer_id",
        "feeder_id",
        "kva_rating",
        "evs_now",
        "first_year_p10",
        "first_year_p50",
        "first_year_p50_managed",
        "years_deferred",
        pl.col("expected_evs").alias("expected_evs_that_year"),
        pl.col("peak_kva_p50").alias("peak_kva_p50_that_year"),
        pl.col("peak_kva_p90").alias("peak_kva_p90_that_year"),
    )
    out["first_to_overload"] = dg.MetadataValue.md(markdown_table(rounded(shown)))
    yearly = rows.filter(
        (pl.col("scenario") == BASE_SCENARIO) & pl.col("transformer_id").is_in(first["transformer_id"].to_list())
    )
    title = f"Transformers overloading first ({BASE_SCENARIO} adoption): yearly peak kVA vs rating"
    png = charts.forecast_chart_png(yearly, title)
    out["first_to_overload_chart"] = dg.MetadataValue.md(f"**{title}**\n\n" + charts.markdown_image(png, title))
    return out


def calibration_result(report: pipeline.ForecastReport, tolerance: float) -> dg.AssetCheckResult:
    result = report.calibration
    if result is None or result.transformer_months == 0:
        return dg.AssetCheckResult(
            asset_key=tables.TRANSFORMER_OVERLOAD_FORECAST.name,
            check_name=CALIBRATION_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"reason": report.backtest_note or "no transformer-month to compare"},
        )
    passed = abs(result.share_under_p50 - 0.5) <= tolerance and abs(result.share_under_p90 - 0.9) <= tolerance
    return dg.AssetCheckResult(
        asset_key=tables.TRANSFORMER_OVERLOAD_FORECAST.name,
        check_name=CALIBRATION_CHECK,
        passed=passed,
        metadata={
            "cutoff": report.backtest_cutoff.isoformat(),
            "transformer_months": result.transformer_months,
            "share_under_p50": round(result.share_under_p50, 4),
            "share_under_p90": round(result.share_under_p90, 4),
            "tolerance": tolerance,
        },
    )


forecast_job = dg.define_asset_job(
    "forecast_job",
    selection=dg.AssetSelection.assets(transformer_overload_forecast),
    description="Refresh ev_charging_behavior and transformer_overload_forecast, and backtest the forecast.",
)


daily_forecast = daily_snapshot_schedule(
    "daily_forecast",
    "0 5 * * *",
    forecast_job,
    "forecast",
    "Daily: refresh the charging behavior and the overload forecast, and backtest it (after the planning snapshots).",
)
