"""The batch-export client against the vendor emulator over real HTTP on 127.0.0.1: every format
lands as the same events as the stream's files, and a second delivery adds only duplicates."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import uvicorn

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.synthetic import simulator
from ev_assets.synthetic.vendor_emulator import EmulatorConfig, create_app, export_frame
from ev_assets.vendor.client import VendorClient, VendorError, received_day_tokens

from .conftest import SIM_START
from .helpers import upgraded_warehouse
from .receiver_server import free_port
from .test_receiver import events_of


@contextmanager
def running_emulator(messages: pl.DataFrame, config: EmulatorConfig):
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(export_frame(messages), config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def client_for(base: str, secret: str = "emulator-secret") -> VendorClient:
    return VendorClient(base, "sub-1", "subscriber-1", f"{base}/oauth2/token", "emulator-client", secret, attempts=2)


@pytest.fixture(scope="module")
def day_feed(small_utility):
    sessions = simulator.simulate_sessions(small_utility, SIM_START, 2, 3)
    return simulator.session_messages(sessions, 3)


def test_every_format_lands_as_the_streamed_events(day_feed, settings, tmp_path):
    day = SIM_START + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    received = day_feed.filter(pl.col("ReceivedTime").is_between(start, start + timedelta(days=1), closed="left"))
    simulator.write_feed(received, tmp_path / "stream")
    stream_files = [f.path for f in feed.list_landing(tmp_path / "stream")]
    expected = events_of(stream_files, tmp_path, "stream", settings)
    assert expected.height == received.height > 0

    with running_emulator(day_feed, EmulatorConfig(delay_s=0.3, rows_per_file=10)) as base, client_for(base) as client:
        for filetype in ("Parquet", "Csv", "Json", "Orc"):
            landing = tmp_path / f"landing-{filetype}"
            paths = client.export_to_landing(
                received_day_tokens(day), landing, filetype=filetype, label=f"export-{day}", first_wait_s=0.05
            )
            assert len(paths) > 1 and all(p.name.endswith(".json") for p in paths)
            assert [p.name for p in sorted(landing.iterdir())] == sorted(p.name for p in paths)  # no temporaries left
            got = events_of(paths, tmp_path, f"export-{filetype}", settings)
            assert got.equals(expected), filetype
        assert client.token_fetches == 1  # the token is cached across requests

        # The export after the stream: only duplicates.
        wh = upgraded_warehouse(f"sqlite:///{tmp_path / 'both.sqlite'}")
        pipeline.ingest_batch(wh, "stream", stream_files, settings)
        again = pipeline.ingest_batch(wh, "export", sorted((tmp_path / "landing-Parquet").iterdir()), settings)
        assert again.accepted == 0 and again.duplicates == received.height and again.reconciled
        wh.dispose()


def test_refusals_and_deadlines_are_clear_errors(day_feed, tmp_path):
    with running_emulator(day_feed, EmulatorConfig(delay_s=60)) as base:
        with client_for(base, secret="wrong") as client, pytest.raises(VendorError, match="401"):
            client.access_token()
        with client_for(base) as client:
            with pytest.raises(VendorError, match="400"):
                client.request_export("Xml", {}, "c-1")
            job = client.request_export("Json", received_day_tokens(SIM_START), "c-2")
            started = time.monotonic()
            with pytest.raises(VendorError, match="did not succeed within"):
                client.wait_for(job, "c-2", deadline_s=0.5, first_wait_s=0.05)
            assert time.monotonic() - started < 5
    assert not (tmp_path / "landing").exists()


def test_received_day_asset_lands_the_export(day_feed, tmp_path, warehouse_url):
    import dagster as dg

    from ev_assets.defs.resources import FeedResource, WarehouseResource
    from ev_assets.defs.vendor import VendorResource, latest_exports, vendor_export_files

    day = SIM_START + timedelta(days=1)
    landing = tmp_path / "landing"
    with running_emulator(day_feed, EmulatorConfig(delay_s=0.2)) as base:
        vendor = VendorResource(
            base_url=base,
            subscription_id="sub-1",
            subscriber_id="subscriber-1",
            token_url=f"{base}/oauth2/token",
            client_id="emulator-client",
            client_secret="emulator-secret",
            filetype="Csv",
            first_poll_s=0.05,
        )
        result = dg.materialize(
            [vendor_export_files],
            partition_key=day.isoformat(),
            resources={
                "vendor": vendor,
                "feed_landing": FeedResource(landing_dir=str(landing)),
                "warehouse": WarehouseResource(url=warehouse_url),
            },
            instance=dg.DagsterInstance.ephemeral(),
        )
    assert result.success
    metadata = result.asset_materializations_for_node("vendor_export_files")[0].metadata
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    expected = day_feed.filter(
        pl.col("ReceivedTime").is_between(start, start + timedelta(days=1), closed="left")
    ).height
    assert metadata["records"].value == expected
    assert all(f.name.startswith(f"export-{day}") for f in feed.list_landing(landing))
    # What it landed is in the warehouse, where the gap reads it.
    export = latest_exports(WarehouseResource(url=warehouse_url), [day.isoformat()])[day.isoformat()]
    assert export["job_id"] == metadata["job_id"].value and export["files"] == len(feed.list_landing(landing))
