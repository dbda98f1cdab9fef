"""What a person sees after a run, as a newcomer runs it through the CLI: every planning table,
the snapshots included, has rows; `status` says how fresh each snapshot is; `top` says what its
columns count; `export` writes any table, the events included, to a file or to stdout."""

from __future__ import annotations

import base64
import io
import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import matplotlib.image
import polars as pl

from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_BEHAVIOR,
    EV_CHARGING_EVENTS,
    NEW_EVS,
    PREMISE_EV_PROFILE,
    TRANSFORMER_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
    TRANSFORMER_OVERLOAD_FORECAST,
    TRANSFORMER_PLANNING_QUEUE,
)

from .test_end_to_end import cli, run_cli

PLANNING_TABLES = (
    TRANSFORMER_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
    TRANSFORMER_OVERLOAD_FORECAST,
    PREMISE_EV_PROFILE,
    NEW_EVS,
    EV_CHARGING_BEHAVIOR,
    TRANSFORMER_OVERLOAD_FORECAST,
    TRANSFORMER_PLANNING_QUEUE,
)


def test_a_run_leaves_every_planning_table_current(env):
    cli(env, "init")
    cli(env, "simulate", "--start", "2024-06-03", "--days", "2", "--seed", "5")
    out = cli(env, "run")
    for stage in ("premise profile", "forecast", "planning queue"):
        assert re.search(rf"{stage}\s+1 runs, 1 ok", out), out

    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    assert {spec.name: wh.count(spec) > 0 for spec in PLANNING_TABLES} == {spec.name: True for spec in PLANNING_TABLES}
    status = cli(env, "status")
    for spec in (
        PREMISE_EV_PROFILE,
        NEW_EVS,
        EV_CHARGING_BEHAVIOR,
        TRANSFORMER_OVERLOAD_FORECAST,
        TRANSFORMER_PLANNING_QUEUE,
    ):
        assert f"snapshot {spec.name}: refreshed" in status and "current (after the latest daily load)" in status

    # The daily load's materialization shows a real chart (a PNG) and rounded, local-time tables.
    with dg.DagsterInstance.get() as instance:
        load = instance.get_latest_materialization_event(dg.AssetKey(TRANSFORMER_DAILY_LOAD.name)).asset_materialization
        intervals = instance.get_latest_materialization_event(
            dg.AssetKey(TRANSFORMER_INTERVAL_LOAD.name)
        ).asset_materialization
    chart = load.metadata["busiest_profile"].value
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", chart).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(io.BytesIO(png), format="png").shape[1] >= 600
    top = intervals.metadata["top_intervals"].value
    assert "interval_start (America/New_York)" in top
    kw_cells = [line.split(" | ")[3] for line in top.splitlines()[2:]]
    assert kw_cells and all(len(cell.split(".")[-1]) <= 2 for cell in kw_cells), top

    # Nothing new: no snapshot is refreshed again.
    again = cli(env, "run")
    assert "premise profile" not in again and "forecast" not in again and "planning queue" not in again

    # A new day changes the daily load: the snapshots follow in the same run, and status says so.
    before = wh.read(TRANSFORMER_PLANNING_QUEUE)["updated_at"].max()
    cli(env, "simulate", "--start", "2024-06-05", "--days", "1", "--seed", "6")
    cli(env, "run")
    assert wh.read(TRANSFORMER_PLANNING_QUEUE)["updated_at"].max() > before
    assert "STALE" not in cli(env, "status")


def test_status_calls_a_snapshot_stale_when_the_daily_load_is_newer(env):
    cli(env, "init")
    cli(env, "simulate", "--start", "2024-06-03", "--days", "1", "--seed", "5")
    cli(env, "run")
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    with wh.transaction() as conn:  # the daily load recomputed after the snapshots, as a later run would
        t = wh.table(TRANSFORMER_DAILY_LOAD)
        later = wh.read(TRANSFORMER_PLANNING_QUEUE)["updated_at"].max() + timedelta(hours=1)
        conn.execute(t.update().values(updated_at=later))
    status = cli(env, "status")
    assert "snapshot transformer_planning_queue: refreshed" in status and "STALE: the daily load changed at" in status


def test_top_says_what_each_column_counts(env):
    cli(env, "init")
    cli(env, "simulate", "--start", "2024-06-03", "--days", "2", "--seed", "5")
    cli(env, "run")
    top = " ".join(cli(env, "top", "--limit", "3").split())
    assert "sessions started" in top and "EVs charging" in top and "local days and times" in top
    assert "a car plugged in the evening before counts here, not in sessions" in top


def test_export_writes_the_events_table_to_stdout(env):
    cli(env, "init")
    cli(env, "simulate", "--start", "2024-06-03", "--days", "1", "--seed", "5")
    cli(env, "run")
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    done = run_cli(env, "export", "ev_charging_events", "--format", "csv", "--out", "-")
    assert done.returncode == 0, done.stderr
    exported = pl.read_csv(io.StringIO(done.stdout))
    assert exported.height == wh.count(EV_CHARGING_EVENTS) and "message_id" in exported.columns
    assert "exported" in done.stderr and "exported" not in done.stdout

    out = env["tmp"] / "events.parquet"
    cli(
        env,
        "export",
        "ev_charging_events",
        "--from",
        "2024-06-03",
        "--to",
        "2024-06-03",
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert pl.read_parquet(out).height > 0


def test_the_ui_lists_the_deployments_days_and_none_is_missing(env, monkeypatch):
    """No EV_PARTITIONS_START: `init` records the history's first day (a week before a new
    deployment's init); a run over recent days loads every partition, the days without charging
    included, and the partitions hold no day before that start (nothing reported missing)."""
    monkeypatch.delenv("EV_PARTITIONS_START")
    tz = ZoneInfo("America/New_York")
    today = datetime.now(tz).date()
    out = cli(env, "init")
    recorded = (env["DAGSTER_HOME"] / "ev_partitions_start").read_text().strip()
    assert recorded == (today - timedelta(days=7)).isoformat() and f"daily partitions start {recorded}" in out
    first_day = today - timedelta(days=3)
    cli(env, "simulate", "--start", first_day.isoformat(), "--days", "2", "--seed", "5")
    cli(env, "run")

    partition_days = [
        date.fromisoformat(recorded) + timedelta(days=n) for n in range((today - date.fromisoformat(recorded)).days + 1)
    ]
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    data_days = set(wh.read(TRANSFORMER_DAILY_LOAD, columns=["load_date"])["load_date"].to_list())
    assert {first_day, first_day + timedelta(days=1)} <= data_days <= set(partition_days)
    with dg.DagsterInstance.get() as instance:
        for name in (TRANSFORMER_DAILY_LOAD.name, TRANSFORMER_INTERVAL_LOAD.name, "substation_daily_load"):
            materialized = instance.get_materialized_partitions(dg.AssetKey(name))
            assert materialized == {d.isoformat() for d in partition_days}, name
    # A second run asks for nothing more: the days are loaded, the snapshots current.
    again = cli(env, "run")
    assert "empty days" not in again and "daily load" not in again
