"""The events API (`ev-awareness serve`) as a real uvicorn server on 127.0.0.1, over warehouses the
real pipeline filled from a small simulated feed (SQLite; PostgreSQL with EV_TEST_POSTGRES_URL)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ev_assets import pipeline
from ev_assets.api.spec_shape import spec_records
from ev_assets.core.feed import FIELDS as SPEC_FIELDS
from ev_assets.tokens import token_hash
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    EV_CHARGING_SESSIONS,
    FEEDER_DAILY_LOAD,
    FEEDER_INTERVAL_LOAD,
    SUBSTATION_DAILY_LOAD,
    SUBSTATION_INTERVAL_LOAD,
    TRANSFORMER_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
)
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


def test_spec_records_by_hand():
    """Numbers as the spec's strings (whole values without a decimal part), times in UTC with
    milliseconds truncated and a Z (a naive time is UTC), nulls stay null, even a column of nulls."""
    events = pl.DataFrame(
        {
            "service_point_id": ["SP1", None],
            "meter_id": ["M1", "M2"],
            "meter_number": [None, None],
            "esn": [None, 'E"2'],
            "transformer_id": ["T1", None],
            "premise_id": ["P1", "P2"],
            "received_time": [datetime(2024, 6, 3, 14, 0, 1, 26999, tzinfo=UTC), datetime(2024, 6, 3, 16, 0, 2)],
            "charge_start_time": [
                datetime(2024, 6, 3, 9, 59, tzinfo=UTC).astimezone(ZoneInfo("America/New_York")),
                None,
            ],
            "charge_end_time": [None, None],
            "charge_w": [7200.0, None],
            "charge_duration": [None, 1.5833333333333333],
            "charge_energy_wh": [None, 10900.0],
        }
    )
    assert spec_records(events).to_dicts() == [
        dict(
            zip(
                SPEC_FIELDS,
                [
                    "SP1",
                    "M1",
                    None,
                    None,
                    "T1",
                    "P1",
                    "2024-06-03T14:00:01.026Z",
                    "2024-06-03T09:59:00.000Z",
                    None,
                    "7200",
                    None,
                    None,
                ],
                strict=True,
            )
        ),
        dict(
            zip(
                SPEC_FIELDS,
                [
                    None,
                    "M2",
                    None,
                    'E"2',
                    None,
                    "P2",
                    "2024-06-03T16:00:02.000Z",
                    None,
                    None,
                    None,
                    "1.5833333333333333",
                    "10900",
                ],
                strict=True,
            )
        ),
    ]


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


# --- sessions and load, formats ------------------------------------------------------------------


@pytest.fixture
def loaded_api(keyed_api):
    """The keyed API over a warehouse whose first half is paired and loaded (sessions, daily and 15-minute load)."""
    base, (warehouse, rest) = keyed_api
    settings = pipeline.PipelineSettings()
    pipeline.pair_pending_batches(warehouse, settings)
    days = warehouse.read(EV_CHARGING_SESSIONS).get_column("event_date")
    pipeline.update_daily_load(warehouse, settings, days.min(), days.max() + timedelta(days=1))
    return base, warehouse


def all_pages(base, path, page_size=7, **params) -> list[dict]:
    rows, cursor = [], None
    while True:
        answer = get(base, path, PageSize=page_size, **params, **({"Cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows += body[next(k for k in body if k != "next_cursor")]
        cursor = body["next_cursor"]
        assert cursor == answer.headers.get("x-next-cursor")
        if cursor is None:
            return rows


LOAD_ENDPOINTS = [
    ("/v1/ev-charging-sessions", EV_CHARGING_SESSIONS, ("session_id",)),
    *(
        (f"/v1/{level}-load/{grain}", spec, (f"{level}_id", order))
        for level, grain, spec, order in (
            ("transformer", "daily", TRANSFORMER_DAILY_LOAD, "load_date"),
            ("transformer", "15min", TRANSFORMER_INTERVAL_LOAD, "interval_start"),
            ("feeder", "daily", FEEDER_DAILY_LOAD, "load_date"),
            ("feeder", "15min", FEEDER_INTERVAL_LOAD, "interval_start"),
            ("substation", "daily", SUBSTATION_DAILY_LOAD, "load_date"),
            ("substation", "15min", SUBSTATION_INTERVAL_LOAD, "interval_start"),
        )
    ),
]


@pytest.mark.parametrize(("path", "spec", "order"), LOAD_ENDPOINTS, ids=[e[0] for e in LOAD_ENDPOINTS])
def test_sessions_and_load_as_json_csv_and_parquet(loaded_api, path, spec, order):
    base, warehouse = loaded_api
    stored = warehouse.read(spec).sort(order)
    assert stored.height > 0
    # Parquet: the stored frame, typed, in key order.
    parquet = get(base, path, format="parquet", PageSize=10_000)
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert_frame_equal(pl.read_parquet(io.BytesIO(parquet.content)), stored)
    csv = get(base, path, format="csv", PageSize=10_000)
    assert csv.headers["content-type"].startswith("text/csv")
    assert pl.read_csv(io.BytesIO(csv.content), infer_schema=False).height == stored.height
    # JSON pages, a few rows at a time: every row once, in order.
    paged = all_pages(base, path)
    assert [tuple(str(r[k]) for k in order[:1]) for r in paged] == [(str(k),) for k in stored.get_column(order[0])]
    assert len(paged) == stored.height
    # A filter on the endpoint's own entity, and a group filter (the 15-minute rows via their day's row).
    key = order[0]
    if key != "session_id":
        some = sorted(set(stored.get_column(key)))[:2]
        picked = all_pages(base, path, EntityId=",".join(some))
        assert len(picked) == stored.filter(pl.col(key).is_in(some)).height > 0
        first_day = str(stored.get_column("load_date").min())
        later = all_pages(base, path, StartDate=first_day, EndDate=str(date.fromisoformat(first_day) + timedelta(1)))
        assert len(later) == stored.filter(pl.col("load_date") == date.fromisoformat(first_day)).height
    if "transformer" in path:
        daily = warehouse.read(TRANSFORMER_DAILY_LOAD)
        feeder = daily.get_column("feeder_id").drop_nulls().sort()[0]
        in_feeder = daily.filter(pl.col("feeder_id") == feeder).select("transformer_id", "load_date")
        expected = stored.join(in_feeder, on=["transformer_id", "load_date"]).height
        assert len(all_pages(base, path, GroupType="Feeder", GroupId=feeder)) == expected > 0


def test_load_refusals(loaded_api):
    base, _ = loaded_api
    assert get(base, "/v1/transformer-load/daily", EntityType="Meter").status_code == 422
    assert "does not apply" in get(base, "/v1/substation-load/daily", GroupType="Feeder", GroupId="F1").text
    assert get(base, "/v1/feeder-load/15min", StartDate="2024-06-04", EndDate="2024-06-03").status_code == 422
    assert get(base, "/v1/transformer-load/daily", key=METER_ONLY_KEY).status_code == 403
    assert "no received time" in get(base, "/v1/ev-charging-sessions", StartReceivedDateTime="2024-06-03T00:00Z").text
    assert get(base, "/v1/ev-charging-sessions", Cursor="garbage").status_code == 400
    injected = get(base, "/v1/transformer-load/daily", EntityId="T1' OR '1'='1")
    assert injected.status_code == 200 and injected.json()["rows"] == []


# --- event time is the session's start -----------------------------------------------------------


def test_event_time_window_is_the_session_start(warehouse, warehouse_url, tmp_path):
    """A hand-made feed: an end's event time is its session's start (paired), or its end minus its reported
    duration (end_only, or a batch not paired yet), never its own end time."""
    settings = pipeline.PipelineSettings(timezone="UTC")
    utc = lambda day, hour, minute=0: datetime(2024, 6, day, hour, minute, tzinfo=UTC)  # noqa: E731
    iso = lambda ts: ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # noqa: E731

    def message(meter, kind, ts, **fields):
        time_field = "ChargeStartTime" if kind == "start" else "ChargeEndTime"
        return {"MeterID": meter, "MeterNumber": f"N{meter}", "ESN": f"E{meter}", "TransformerID": "T1",
                "ServicePointID": f"SP{meter}", "PremiseID": f"P{meter}",
                "ReceivedTime": iso(ts + timedelta(minutes=1)), time_field: iso(ts), **fields}  # fmt: skip

    def send(name, records, pair):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"EVChargingEvents": records}))
        assert pipeline.ingest_batch(warehouse, name, [path], settings, now=utc(10, 0)).reconciled
        if pair:
            pipeline.pair_pending_batches(warehouse, settings, now=utc(10, 0))

    send(
        "paired",
        [
            message("M1", "start", utc(3, 23, 50), ChargeW="7000"),  # a session over midnight
            message("M1", "end", utc(4, 0, 30), ChargeDuration="0.6666667", ChargeEnergy="4600"),
            message("M2", "end", utc(4, 1), ChargeDuration="2", ChargeEnergy="14000"),  # end_only: start 3rd 23:00
        ],
        pair=True,
    )
    send(
        "unpaired",
        [
            message("M3", "start", utc(4, 10), ChargeW="7000"),
            message("M4", "end", utc(5, 0, 30), ChargeDuration="1", ChargeEnergy="7000"),  # start the 4th 23:30
        ],
        pair=False,
    )
    with running_api(warehouse_url, EV_API_KEY_SHA256S="") as base:

        def window(first, last):
            records = get(base, "/v1/ev-charging-events", StartEventDateTime=iso(first), EndEventDateTime=iso(last))
            assert records.status_code == 200, records.text
            return sorted((r["MeterID"], "start" if r["ChargeStartTime"] else "end")
                          for r in records.json()["EVChargingEvents"])  # fmt: skip

        assert window(utc(3, 0), utc(4, 0)) == [("M1", "end"), ("M1", "start"), ("M2", "end")]
        assert window(utc(4, 0), utc(5, 0)) == [("M3", "start"), ("M4", "end")]
        assert window(utc(3, 23, 50), utc(3, 23, 51)) == [("M1", "end"), ("M1", "start")]  # start inclusive
        assert window(utc(3, 23), utc(3, 23, 50)) == [("M2", "end")]  # end exclusive
        assert window(utc(5, 0), utc(6, 0)) == []
        # The same window with an offset: 2024-06-03T20:00-04:00 is midnight UTC.
        offset = get(base, "/v1/ev-charging-events", StartEventDateTime="2024-06-03T20:00:00-04:00",
                     EndEventDateTime="2024-06-04T20:00:00-04:00").json()["EVChargingEvents"]  # fmt: skip
        assert sorted(r["MeterID"] for r in offset) == ["M3", "M4"]
        sessions = get(base, "/v1/ev-charging-sessions", StartEventDateTime=iso(utc(3, 0)),
                       EndEventDateTime=iso(utc(4, 0))).json()["EVChargingSessions"]  # fmt: skip
        assert [s["meter_id"] for s in sessions] == ["M1"]


# --- the stream as newline-delimited JSON --------------------------------------------------------


def read_lines(base, cursor, limit, **params):
    """Up to `limit` lines of the NDJSON stream, then the connection dropped (a consumer cut off)."""
    lines = []
    with httpx.stream(
        "GET",
        f"{base}/v1/ev-charging-events/stream",
        params={**({"Cursor": cursor} if cursor else {}), **params},
        headers={"Authorization": f"Bearer {KEY}", "Accept": "application/x-ndjson"},
        timeout=30,
    ) as answer:
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        for line in answer.iter_lines():
            if line:
                lines.append(json.loads(line))
            if len(lines) >= limit:
                break
    return lines


def test_ndjson_stream_resumes_with_no_gap_and_no_repeat_while_batches_land(keyed_api):
    base, (warehouse, rest) = keyed_api
    got, cursor = [], None
    batches = [rest[i::3] for i in range(3)]
    for n, batch in enumerate([*batches, []]):
        while True:  # cut off after 13 lines each time; resume from the last line's cursor
            lines = read_lines(base, cursor, 13)
            got += [line["event"] for line in lines]
            if lines:
                cursor = lines[-1]["cursor"]
            if len(lines) < 13:
                break
        if batch:
            ingest(warehouse, batch, f"later{n}")
    every = get(base, "/v1/ev-charging-events", PageSize=10_000).json()["EVChargingEvents"]
    keys = [(r["MeterID"], r["ChargeStartTime"], r["ChargeEndTime"]) for r in got]
    assert len(keys) == len(set(keys)) == len(every)
    # format=ndjson says the same as the Accept header; WaitSeconds follows a commit that lands meanwhile.
    by_format = httpx.get(
        f"{base}/v1/ev-charging-events/stream", params={"format": "ndjson"}, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert len(by_format.text.splitlines()) == len(every)


# --- schemathesis against /openapi.json ----------------------------------------------------------


def test_schemathesis_finds_no_500_and_no_response_outside_the_schema(loaded_api):
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    base, _ = loaded_api
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # A long poll holds its answer up to WaitSeconds (at most 60): capped at 1 s here, where only
            # the answers' shapes are checked (test_stream_* check the wait itself).
            wait = (case.query or {}).get("WaitSeconds")
            if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 1:
                case.query["WaitSeconds"] = 1
            response = case.call(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance, status_code_conformance]
            )

        check()


def test_nul_in_a_parameter_is_a_422_not_a_500(keyed_api):
    """Schemathesis found it on PostgreSQL (text cannot hold NUL); SQLite answers the same."""
    base, _ = keyed_api
    for path, params in (
        ("/v1/ev-charging-events", {"EntityType": "Meter", "EntityId": "M\x001"}),
        ("/v1/feeder-load/daily", {"EntityId": "F\x00"}),
        ("/v1/ev-charging-sessions", {"GroupType": "Feeder", "GroupId": "\x00"}),
    ):
        answer = get(base, path, **params)
        assert answer.status_code == 422 and "NUL" in answer.json()["detail"], answer.text


def test_an_event_window_over_everything_finds_every_event(loaded_api):
    """Every start and end, paired or not, is reachable through the event window (half the feed paired)."""
    base, warehouse = loaded_api
    every = all_pages(base, "/v1/ev-charging-events", page_size=10_000)
    windowed = all_pages(
        base,
        "/v1/ev-charging-events",
        page_size=10_000,
        StartEventDateTime="2000-01-01T00:00:00Z",
        EndEventDateTime="2100-01-01T00:00:00Z",
    )
    assert windowed == every and len(every) > 0
