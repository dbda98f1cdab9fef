"""The two vendor channels end to end over real HTTP on 127.0.0.1: the stream through the receiver
(JSON, Avro), then the batch export of the same day through the emulator in every format, and a
nightly gap-fill after a stream that lost 5 % of its payloads, with the gap it filled."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import httpx
import polars as pl
import pytest

from ev_assets import cli, pipeline
from ev_assets.core import feed
from ev_assets.defs.resources import FeedResource, WarehouseResource
from ev_assets.defs.vendor import VendorResource, gap_run_requests, vendor_export_files, vendor_export_gap
from ev_assets.synthetic import push, simulator
from ev_assets.synthetic.vendor_emulator import EmulatorConfig
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_CHARGING_SESSIONS

from .conftest import SIM_START
from .helpers import upgraded_warehouse
from .receiver_server import TOKEN, auth, running_receiver
from .test_vendor import client_for, running_emulator

DAY = SIM_START + timedelta(days=1)  # the received day (UTC) of the gap-fill tests


def sessions_of(wh: Warehouse) -> pl.DataFrame:
    return wh.read(EV_CHARGING_SESSIONS).drop("updated_at").sort("session_id")


def ingest_and_pair(wh: Warehouse, batch_id: str, paths, settings) -> pipeline.IngestReport:
    report = pipeline.ingest_batch(wh, batch_id, paths, settings)
    assert report.reconciled and report.rejected == 0
    pipeline.pair_pending_batches(wh, settings)
    return report


def fresh_warehouse(url: str, small_utility, settings) -> Warehouse:
    wh = upgraded_warehouse(url)
    pipeline.load_reference(wh, small_utility, settings)
    return wh


def received_on(messages: pl.DataFrame, day: date) -> pl.DataFrame:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return messages.filter(pl.col("ReceivedTime").is_between(start, start + timedelta(days=1), closed="left"))


def folder_only_sessions(messages: pl.DataFrame, tmp_path, small_utility, settings) -> pl.DataFrame:
    """The session table of the folder-only path (the simulator's files in the landing folder)."""
    paths = simulator.write_feed(messages, tmp_path / "folder")
    wh = fresh_warehouse(f"sqlite:///{tmp_path / 'folder.sqlite'}", small_utility, settings)
    try:
        ingest_and_pair(wh, "folder", paths, settings)
        assert set(wh.read(EV_CHARGING_EVENTS)["first_channel"].unique()) == {"folder"}
        return sessions_of(wh)
    finally:
        wh.dispose()


@pytest.fixture(scope="module")
def two_days(small_utility) -> pl.DataFrame:
    return simulator.session_messages(simulator.simulate_sessions(small_utility, SIM_START, 2, 3), 3)


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_stream_then_every_export_format_adds_only_duplicates(fmt, small_utility, settings, tmp_path):
    messages = simulator.session_messages(simulator.simulate_sessions(small_utility, SIM_START, 1, 3), 3)
    expected = folder_only_sessions(messages, tmp_path, small_utility, settings)
    assert expected.height > 0

    landing = tmp_path / "landing"
    with running_receiver(landing) as (base, _):
        pushed = push.push_feed(messages, f"{base}/ev-charging-events", fmt=fmt, token=TOKEN)
    assert pushed.messages == messages.height
    wh = fresh_warehouse(f"sqlite:///{tmp_path / 'stream.sqlite'}", small_utility, settings)
    stream_files = [f.path for f in feed.list_landing(landing)]
    assert stream_files and all(p.name.startswith("stream-") for p in stream_files)
    report = ingest_and_pair(wh, "stream", stream_files, settings)
    assert report.accepted == messages.height
    assert sessions_of(wh).equals(expected)
    events_before = wh.read(EV_CHARGING_EVENTS)
    assert set(events_before["first_channel"].unique()) == {"stream"}

    # Every received time of the day's messages, as one export window (offsets included).
    first = messages["ReceivedTime"].min().replace(hour=0, minute=0, second=0, microsecond=0)
    tokens = {
        "StartReceivedDateTime": first.isoformat(),
        "EndReceivedDateTime": (messages["ReceivedTime"].max() + timedelta(days=1)).isoformat(),
    }
    with (
        running_emulator(messages, EmulatorConfig(delay_s=0.2, rows_per_file=500)) as vendor,
        client_for(vendor) as client,
    ):
        for filetype in ("Parquet", "Csv", "Json", "Orc"):
            exported = client.export_to_landing(
                tokens,
                tmp_path / f"export-{filetype}",
                filetype=filetype,
                label=f"export-{SIM_START}",
                first_wait_s=0.05,
            )
            again = ingest_and_pair(wh, f"export-{filetype}", exported, settings)
            assert (again.accepted, again.duplicates, again.rejected) == (0, messages.height, 0), filetype
            assert sessions_of(wh).equals(expected), filetype
    # The second delivery changed no event: each keeps the channel it first arrived by.
    assert wh.read(EV_CHARGING_EVENTS).sort("message_id").equals(events_before.sort("message_id"))
    wh.dispose()


def test_nightly_gap_fill_after_a_lossy_stream(two_days, small_utility, warehouse_url, settings, tmp_path):
    day_messages = received_on(two_days, DAY)
    expected = folder_only_sessions(day_messages, tmp_path, small_utility, settings)

    # The stream loses every 20th payload (5 %).
    payloads = push.payloads(day_messages)
    kept = [p for n, p in enumerate(payloads) if n % 20 != 7]
    dropped = sum(len(p) for n, p in enumerate(payloads) if n % 20 == 7)
    assert dropped > 0
    landing = tmp_path / "landing"
    with running_receiver(landing) as (base, _), httpx.Client(headers=auth()) as http:
        for records in kept:
            body, content_type = push.encode(records, "avro")
            assert (
                http.post(
                    f"{base}/ev-charging-events", content=body, headers={"Content-Type": content_type}
                ).status_code
                == 202
            )
    wh = fresh_warehouse(warehouse_url, small_utility, settings)
    ingest_and_pair(wh, "stream", [f.path for f in feed.list_landing(landing)], settings)
    assert sessions_of(wh).height < expected.height or not sessions_of(wh).equals(expected)

    # The nightly gap-fill asks for yesterday's received day.
    from ev_assets.definitions import defs

    tick = defs.resolve_schedule_def("nightly_gap_fill").evaluate_tick(
        dg.build_schedule_context(
            scheduled_execution_time=datetime.combine(DAY + timedelta(days=1), datetime.min.time(), UTC)
            + timedelta(hours=3, minutes=15)
        )
    )
    (request,) = tick.run_requests
    assert request.partition_key == DAY.isoformat()

    instance = dg.DagsterInstance.ephemeral()
    resource = WarehouseResource(url=warehouse_url)
    with running_emulator(two_days, EmulatorConfig(delay_s=0.2, rows_per_file=50)) as base:
        vendor = VendorResource(
            base_url=base,
            subscription_id="sub-1",
            subscriber_id="subscriber-1",
            token_url=f"{base}/oauth2/token",
            client_id="emulator-client",
            client_secret="emulator-secret",
            filetype="Parquet",
            first_poll_s=0.05,
        )
        done = dg.materialize(
            [vendor_export_files],
            partition_key=request.partition_key,
            instance=instance,
            resources={"vendor": vendor, "feed_landing": FeedResource(landing_dir=str(landing)), "warehouse": resource},
        )
    assert done.success
    # Landed, not ingested yet: the gap is not asked for.
    assert gap_run_requests(resource)[0] == []

    exported = [f.path for f in feed.list_landing(landing) if f.name.startswith("export-")]
    assert exported
    report = ingest_and_pair(wh, "export", exported, settings)
    assert report.accepted == dropped and report.duplicates == day_messages.height - dropped
    assert sessions_of(wh).equals(expected)  # every session is present

    (gap_request,) = gap_run_requests(resource)[0]
    assert gap_request.partition_key == DAY.isoformat() and gap_request.tags["dagster/partition"] == DAY.isoformat()
    # What the export landed is read from the warehouse, not from the export's materialization: an
    # instance that never saw it (wiped, another deployment's) computes the same gap.
    instance.wipe()
    assert gap_run_requests(resource)[0] == [gap_request]
    result = dg.materialize(
        [vendor_export_gap],
        partition_key=DAY.isoformat(),
        instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": resource},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("vendor_export_gap")[0].metadata
    assert metadata["export_only"].value == dropped
    assert metadata["stream_delivered"].value == day_messages.height - dropped
    assert metadata["export_duplicates"].value == day_messages.height - dropped
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["export_reconciles"].passed
    assert not checks["stream_complete"].passed and checks["stream_complete"].severity == dg.AssetCheckSeverity.WARN
    wh.dispose()


def test_cli_backfill_lands_ingests_and_counts_the_gap(two_days, env, monkeypatch):
    assert cli.main(["init"]) == 0
    with running_emulator(two_days, EmulatorConfig(delay_s=0.2)) as base:
        for name, value in {
            "EV_VENDOR_BASE_URL": base,
            "EV_VENDOR_SUBSCRIPTION_ID": "sub-1",
            "EV_VENDOR_SUBSCRIBER_ID": "subscriber-1",
            "EV_VENDOR_TOKEN_URL": f"{base}/oauth2/token",
            "EV_VENDOR_CLIENT_ID": "emulator-client",
            "EV_VENDOR_CLIENT_SECRET": "emulator-secret",
        }.items():
            monkeypatch.setenv(name, value)
        code = cli.main(["backfill", "--received-from", str(DAY), "--received-to", str(DAY), "--format", "csv"])
    assert code == 0
    wh = Warehouse(env["EV_WAREHOUSE_URL"])
    try:
        events = wh.read(EV_CHARGING_EVENTS)
        assert events.height == received_on(two_days, DAY).height
        assert set(events["first_channel"].unique()) == {"export"}
        assert wh.count(EV_CHARGING_SESSIONS) > 0
    finally:
        wh.dispose()
    instance = dg.DagsterInstance.get()
    (gap,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=vendor_export_gap.key, asset_partitions=[str(DAY)]), limit=5
    ).records
    assert gap.asset_materialization.metadata["export_only"].value == events.height
