"""The events API (`ev-awareness serve`) as a real uvicorn server on 127.0.0.1, over warehouses the
real pipeline filled from a small simulated feed (SQLite; PostgreSQL with EV_TEST_POSTGRES_URL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ev_assets import pipeline
from ev_assets.api.app import SPEC_FIELDS
from ev_assets.tokens import token_hash
from ev_assets.warehouse.store import Warehouse
from ev_assets_tests.conftest import simulate
from ev_assets_tests.receiver_server import free_port

KEY, METER_ONLY_KEY = "api-key-0123456789", "meter-key-abcdef"
pytestmark = pytest.mark.postgres


@contextmanager
def running_api(warehouse_url: str, **env: str):
    port = free_port()
    environment = {**os.environ, "EV_WAREHOUSE_URL": warehouse_url, **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "ev_assets.cli", "serve", "--host", env.pop("HOST", "127.0.0.1"), "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"api exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "api did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def ingest(warehouse: Warehouse, paths: list[Path], batch: str) -> None:
    assert pipeline.ingest_batch(warehouse, batch, paths, pipeline.PipelineSettings()).reconciled


@pytest.fixture
def filled(env, warehouse, small_utility):
    pipeline.load_reference(warehouse, small_utility, pipeline.PipelineSettings())
    simulate(small_utility, env["EV_FEED_DIR"], days=1)
    paths = sorted(env["EV_FEED_DIR"].glob("*.json"))
    ingest(warehouse, paths[: len(paths) // 2], "first")
    return warehouse, paths[len(paths) // 2 :]


@pytest.fixture
def keyed_api(filled, warehouse_url):
    keys = f"{token_hash(KEY)},{token_hash(METER_ONLY_KEY)}:Meter"
    with running_api(warehouse_url, EV_API_KEY_SHA256S=keys) as base:
        yield base, filled


def get(base, path, key=KEY, **params):
    return httpx.get(f"{base}{path}", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_payload_is_the_spec_shape_field_by_field(keyed_api):
    base, (warehouse, _rest) = keyed_api
    body = get(base, "/v1/ev-charging-events", PageSize=10_000).json()
    assert "EVChargingEvents" in body, body
    records = body["EVChargingEvents"]
    stored = warehouse.read(
        warehouse_spec := __import__("ev_assets.warehouse.tables").warehouse.tables.EV_CHARGING_EVENTS
    )
    assert len(records) == stored.height > 0 and warehouse_spec
    by_meter_time = {(r["MeterID"], r["ChargeStartTime"] or r["ChargeEndTime"]): r for r in records}
    for row in stored.iter_rows(named=True):
        r = by_meter_time[(row["meter_id"], row["message_time"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")]
        assert tuple(r) == SPEC_FIELDS
        assert all(v is None or isinstance(v, str) for v in r.values())
        assert (r["ServicePointID"], r["PremiseID"], r["TransformerID"]) == (
            row["service_point_id"],
            row["premise_id"],
            row["transformer_id"],
        )
        if row["message_type"] == "start":
            assert float(r["ChargeW"]) == row["charge_w"] and r["ChargeEndTime"] is None
            assert r["ChargeDuration"] is None and r["ChargeEnergy"] is None
        else:
            assert float(r["ChargeEnergy"]) == row["charge_energy_wh"] and r["ChargeStartTime"] is None
            assert float(r["ChargeDuration"]) == row["charge_duration"] and r["ChargeW"] is None


def test_filters_pages_and_sql_injection(keyed_api):
    base, (warehouse, _rest) = keyed_api
    every = get(base, "/v1/ev-charging-events", PageSize=10_000).json()["EVChargingEvents"]
    meters = sorted({r["MeterID"] for r in every})[:3]
    repeated = get(base, "/v1/ev-charging-events", EntityType="Meter", EntityId=meters, PageSize=10_000).json()
    comma = get(base, "/v1/ev-charging-events", EntityType="Meter", EntityId=",".join(meters), PageSize=10_000).json()
    assert repeated == comma
    assert {r["MeterID"] for r in repeated["EVChargingEvents"]} == set(meters)
    assert len(repeated["EVChargingEvents"]) == sum(r["MeterID"] in meters for r in every)
    # Pages: stable order, no gap, no repeat.
    seen, cursor = [], None
    while True:
        params = {"PageSize": 7, **({"Cursor": cursor} if cursor else {})}
        body = get(base, "/v1/ev-charging-events", **params).json()
        seen += body["EVChargingEvents"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(map(str, seen)) == sorted(map(str, every)) and len(seen) == len(every)
    injected = get(base, "/v1/ev-charging-events", EntityType="Meter", EntityId=f"{meters[0]}' OR '1'='1")
    assert injected.status_code == 200 and injected.json()["EVChargingEvents"] == []
    injected = get(base, "/v1/ev-charging-events", EntityType="Meter", EntityId="x'; DROP TABLE ev_charging_events; --")
    assert injected.status_code == 200
    assert len(get(base, "/v1/ev-charging-events", PageSize=10_000).json()["EVChargingEvents"]) == len(every)


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"StartEventDateTime": "2024-06-03T18:00:00"}, 422, "no UTC offset"),
        ({"EntityType": "Car"}, 422, "is unknown"),
        ({"EntityId": "M1"}, 422, "needs an EntityType"),
        ({"EntityType": "Meter", "EntityId": ","}, 422, "is empty"),
        ({"EntityType": "Meter", "EntityId": ",".join(f"M{n}" for n in range(1001))}, 422, "exceed the maximum"),
        (
            {"StartReceivedDateTime": "2024-06-03T18:00:00Z", "EndReceivedDateTime": "2024-06-03T17:00:00Z"},
            422,
            "must be after",
        ),
        ({"GroupType": "Feeder"}, 422, "go together"),
        ({"Cursor": "garbage"}, 400, "not one this API gave out"),
    ],
)
def test_each_refusal_says_what_to_do(keyed_api, params, status, says):
    base, _ = keyed_api
    answer = get(base, "/v1/ev-charging-events", **params)
    assert answer.status_code == status and says in answer.json()["detail"]


def test_auth(keyed_api):
    base, _ = keyed_api
    assert httpx.get(f"{base}/v1/ev-charging-events").status_code == 401
    assert get(base, "/v1/ev-charging-events", key="wrong").status_code == 401
    assert get(base, "/v1/ev-charging-events", key=METER_ONLY_KEY).status_code == 403
    assert get(base, "/v1/ev-charging-events", key=METER_ONLY_KEY, EntityType="Meter", EntityId="M1").status_code == 200
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/ready").status_code == 200
    assert "/v1/ev-charging-events" in httpx.get(f"{base}/openapi.json").json()["paths"]


def test_without_keys_only_loopback(warehouse_url):
    refused = subprocess.run(
        [sys.executable, "-m", "ev_assets.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env={**os.environ, "EV_WAREHOUSE_URL": warehouse_url, "EV_API_KEY_SHA256S": ""},
        capture_output=True,
        timeout=60,
    )
    assert refused.returncode != 0 and b"without API keys" in refused.stderr


def test_stream_resumes_with_no_gap_and_no_repeat_while_batches_land(keyed_api):
    base, (warehouse, rest) = keyed_api
    got, cursor = [], None
    batches = [rest[i::3] for i in range(3)]
    for n, batch in enumerate([*batches, []]):
        while True:  # read to the end, a few records at a time (each call is a reconnect)
            body = get(
                base, "/v1/ev-charging-events/stream", PageSize=5, **({"Cursor": cursor} if cursor else {})
            ).json()
            got += body["EVChargingEvents"]
            cursor = body["next_cursor"]
            if not body["EVChargingEvents"]:
                break
        if batch:
            ingest(warehouse, batch, f"later{n}")
    every = get(base, "/v1/ev-charging-events", PageSize=10_000).json()["EVChargingEvents"]
    keys = [(r["MeterID"], r["ChargeStartTime"], r["ChargeEndTime"]) for r in got]
    assert len(keys) == len(set(keys)) == len(every)
