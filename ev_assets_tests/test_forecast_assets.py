"""The forecast's Dagster assets on a real warehouse and a real (ephemeral) Dagster instance: a
simulated utility whose EVs arrive over time (simulator.AdoptionCurve), its sessions written into
ev_charging_sessions, the reference loaded by its asset, then the forecast materialized."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import polars as pl
import pytest

from ev_assets.defs.forecast import CALIBRATION_CHECK, transformer_overload_forecast
from ev_assets.defs.reference import reference_tables
from ev_assets.defs.resources import PipelineConfig, ReferenceResource, WarehouseResource
from ev_assets.synthetic import simulator
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_BEHAVIOR, EV_CHARGING_SESSIONS, TRANSFORMER_OVERLOAD_FORECAST

START = date(2024, 1, 1)
DAYS = 366


def sessions_rows(small_utility) -> pl.DataFrame:
    config = simulator.SimulationConfig(adoption=simulator.AdoptionCurve(saturation=0.6, midpoint=date(2025, 6, 1)))
    truth = simulator.simulate_sessions(small_utility, START, DAYS, 9, config)
    local_date = pl.col("start_time").dt.convert_time_zone("America/New_York").dt.date()
    frame = truth.with_columns(
        pl.col("session_id"),
        pl.lit("enriched").alias("enrichment_status"),
        pl.lit("complete").alias("status"),
        local_date.alias("event_date"),
        (pl.col("energy_wh") / 1000 / pl.col("duration_h")).alias("average_kw"),
        pl.lit(datetime(2025, 1, 2, tzinfo=UTC)).alias("updated_at"),
    )
    # One session in 50 flagged: kept out of the behavior (its energy is 10x what it could be).
    flagged = pl.int_range(pl.len()) % 50 == 0
    frame = frame.with_columns(
        pl.when(flagged).then(pl.lit("power_above_charge_w")).alias("quality_flags"),
        pl.when(flagged).then(pl.col("energy_wh") * 10).otherwise(pl.col("energy_wh")).alias("energy_wh"),
    )
    missing = [c for c in EV_CHARGING_SESSIONS.column_names if c not in frame.columns]
    return EV_CHARGING_SESSIONS.conform(frame.with_columns(pl.lit(None).alias(c) for c in missing))


@pytest.fixture
def resources(env):
    return {
        "warehouse": WarehouseResource(url=env["EV_WAREHOUSE_URL"]),
        "reference": ReferenceResource(reference_dir=str(env["EV_REFERENCE_DIR"])),
        "pipeline_config": PipelineConfig(),
    }


def test_forecast_assets_write_both_tables_and_check_the_backtest(env, small_utility, resources, monkeypatch):
    monkeypatch.setenv("EV_FORECAST_DRAWS", "200")
    monkeypatch.setenv("EV_FORECAST_YEARS", "5")
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([reference_tables], resources=resources, instance=instance).success
        rows = sessions_rows(small_utility)
        with wh.transaction() as conn:
            wh.insert(conn, EV_CHARGING_SESSIONS, rows)
        result = dg.materialize([transformer_overload_forecast], resources=resources, instance=instance)
        assert result.success
        by_key = {
            m.asset_key.path[-1]: m.metadata
            for m in result.asset_materializations_for_node("transformer_overload_forecast")
        }
        (check,) = result.get_asset_check_evaluations()
    behavior = wh.read(EV_CHARGING_BEHAVIOR)
    forecast_rows = wh.read(TRANSFORMER_OVERLOAD_FORECAST)
    assert by_key["ev_charging_behavior"]["dagster/row_count"].value == behavior.height > 0
    assert by_key["transformer_overload_forecast"]["dagster/row_count"].value == forecast_rows.height
    assert "dagster/column_schema" in by_key["transformer_overload_forecast"]
    # The flagged sessions are kept out: the sessions behind the behavior are the trusted ones.
    trusted = rows.filter(pl.col("quality_flags").is_null()).height
    assert behavior["session_count"].sum() == trusted
    # Every transformer with premises, 3 scenarios x 5 years; the years after the history's.
    transformers = forecast_rows["transformer_id"].n_unique()
    assert forecast_rows.height == transformers * 3 * 5
    assert sorted(forecast_rows["year"].unique().to_list()) == [2025, 2026, 2027, 2028, 2029]
    # Higher adoption, more EVs: the scenarios are ordered for every transformer and year.
    wide = forecast_rows.pivot("scenario", index=["transformer_id", "year"], values="expected_evs")
    assert (wide["low"] <= wide["base"] + 1e-9).all() and (wide["base"] <= wide["high"] + 1e-9).all()
    # The planner's picture: a markdown table and a PNG chart of the first to overload.
    assert "first_to_overload" in by_key["transformer_overload_forecast"]
    assert "data:image/png;base64," in by_key["transformer_overload_forecast"]["first_to_overload_chart"].value
    # The backtest ran on the last months and reports its calibration.
    assert check.check_name == CALIBRATION_CHECK
    assert check.metadata["transformer_months"].value > 0
    p50, p90 = check.metadata["share_under_p50"].value, check.metadata["share_under_p90"].value
    assert 0 <= p50 <= p90 <= 1
    assert check.passed == (abs(p50 - 0.5) <= 0.1 and abs(p90 - 0.9) <= 0.1)
