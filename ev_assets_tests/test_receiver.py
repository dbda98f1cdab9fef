"""The stream receiver over real HTTP (uvicorn in a subprocess on 127.0.0.1, httpx): payloads land
as files the ingest accepts, bad input is refused and writes nothing, acknowledged pushes survive
kill -9."""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import time

import httpx
import polars as pl
import pytest

from ev_assets import pipeline
from ev_assets.core import avro_schema, feed
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS

from .conftest import simulate
from .helpers import upgraded_warehouse
from .receiver_server import OTHER_TOKEN, TOKEN, auth, running_receiver

AVRO = {"Content-Type": "application/avro"}
JSON = {"Content-Type": "application/json"}

# What an event says, not how or when it was read.
EVENT_COLUMNS = [
    "message_id",
    "message_type",
    "meter_id",
    "meter_number",
    "esn",
    "reported_service_point_id",
    "reported_premise_id",
    "reported_transformer_id",
    "message_time",
    "received_time",
    "charge_start_time",
    "charge_end_time",
    "charge_w",
    "charge_duration",
    "charge_energy_wh",
]


def landed(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def events_of(paths, tmp_path, name, settings) -> pl.DataFrame:
    wh = upgraded_warehouse(f"sqlite:///{tmp_path / f'{name}.sqlite'}")
    try:
        report = pipeline.ingest_batch(wh, name, paths, settings)
        assert report.reconciled and report.rejected == 0 and report.files_quarantined == 0
        return wh.read(EV_CHARGING_EVENTS).select(EVENT_COLUMNS).sort("message_id")
    finally:
        wh.dispose()


def test_json_and_avro_pushes_land_as_the_same_events(small_utility, settings, tmp_path):
    source = tmp_path / "source"
    simulate(small_utility, source, days=1)
    files = [f.path for f in feed.list_landing(source)]
    landing = tmp_path / "landing"
    names: dict[str, list[str]] = {"json": [], "container": [], "single": []}
    records_sent = 0
    with running_receiver(landing) as (base, _), httpx.Client(base_url=base, headers=auth()) as client:
        for path in files:
            body = path.read_bytes()
            records = json.loads(body)["EVChargingEvents"]
            avro_records = [avro_schema.from_json_record(r) for r in records]
            records_sent += len(records)
            for kind, content, headers in (
                ("json", body, JSON),
                ("container", avro_schema.encode_container(avro_records), AVRO),
                ("single", avro_schema.encode_single_objects(avro_records), {"Content-Type": "avro/binary"}),
            ):
                answer = client.post("/ev-charging-events", content=content, headers=headers)
                assert answer.status_code == 202, answer.text
                assert answer.json()["records"] == len(records)
                names[kind].append(answer.json()["file"])
        metrics = client.get("/metrics", headers={"Accept": "application/json"}).json()
    assert metrics["received_payloads"] == 3 * len(files) and metrics["received_records"] == 3 * records_sent
    # Every acknowledged payload is a complete *.json file, nothing else is left.
    assert landed(landing) == sorted(n for group in names.values() for n in group)
    assert all(n.startswith("stream-") for n in landed(landing))
    # The JSON push is kept byte for byte.
    assert [(landing / n).read_bytes() for n in names["json"]] == [p.read_bytes() for p in files]

    expected = events_of(files, tmp_path, "folder", settings)
    for kind, group in names.items():
        got = events_of([landing / n for n in group], tmp_path, kind, settings)
        assert got.equals(expected), kind

    # The same messages by another channel are duplicates, not new events (identity at ms precision).
    wh = upgraded_warehouse(f"sqlite:///{tmp_path / 'all.sqlite'}")
    pipeline.ingest_batch(wh, "json", [landing / n for n in names["json"]], settings)
    again = pipeline.ingest_batch(wh, "avro", [landing / n for n in names["container"] + names["single"]], settings)
    assert again.accepted == 0 and again.duplicates == 2 * records_sent and again.reconciled
    wh.dispose()


def test_bad_input_gets_the_documented_answer_and_writes_nothing(tmp_path):
    landing = tmp_path / "landing"
    good = json.dumps({"EVChargingEvents": []}).encode()
    with running_receiver(landing, EV_RECEIVER_MAX_BYTES="1000") as (base, _), httpx.Client(base_url=base) as client:
        post = client.post
        url = "/ev-charging-events"
        cases = {
            "no token": (post(url, content=good, headers=JSON), 401, "unauthorized"),
            "wrong token": (post(url, content=good, headers={**JSON, **auth("nope")}), 401, "unauthorized"),
            "basic auth": (
                post(url, content=good, headers={**JSON, "Authorization": f"Basic {TOKEN}"}),
                401,
                "unauthorized",
            ),
            "oversize": (post(url, content=b" " * 1001, headers={**JSON, **auth()}), 413, "too_large"),
            "oversize, chunked": (
                post(url, content=iter([b" " * 600, b" " * 600]), headers={**JSON, **auth()}),
                413,
                "too_large",
            ),
            "not JSON": (post(url, content=b"EVChargingEvents,a,b", headers={**JSON, **auth()}), 400, "not_json"),
            "no events list": (post(url, content=b'{"events": []}', headers={**JSON, **auth()}), 400, "no_events_list"),
            "events not a list": (
                post(url, content=b'{"EVChargingEvents": {}}', headers={**JSON, **auth()}),
                400,
                "no_events_list",
            ),
            "a list": (post(url, content=b"[]", headers={**JSON, **auth()}), 400, "no_events_list"),
            "not Avro": (post(url, content=b"{}", headers={**AVRO, **auth()}), 400, "undecodable_avro"),
            "truncated Avro": (
                post(
                    url,
                    content=avro_schema.SINGLE_OBJECT_MARKER + avro_schema.FINGERPRINT + b"\x02",
                    headers={**AVRO, **auth()},
                ),
                400,
                "undecodable_avro",
            ),
            "other schema": (
                post(url, content=avro_schema.SINGLE_OBJECT_MARKER + b"\x00" * 8, headers={**AVRO, **auth()}),
                400,
                "undecodable_avro",
            ),
            "text/plain": (
                post(url, content=good, headers={"Content-Type": "text/plain", **auth()}),
                415,
                "unsupported_media_type",
            ),
            "metrics without token": (client.get("/metrics"), 401, "unauthorized"),
        }
        for case, (answer, status, reason) in cases.items():
            assert answer.status_code == status, (case, answer.text)
            assert answer.json()["error"] == reason, case
        assert cases["no token"][0].headers["WWW-Authenticate"].startswith("Bearer")
        assert landed(landing) == []
        assert client.get("/health").status_code == 200
        metrics = client.get("/metrics", headers=auth(OTHER_TOKEN)).text
    assert "ev_receiver_payloads_total 0" in metrics
    assert 'ev_receiver_refused_total{reason="unauthorized"} 4' in metrics
    assert 'ev_receiver_refused_total{reason="too_large"} 2' in metrics


def test_rate_limit_per_token(tmp_path):
    landing = tmp_path / "landing"
    body = json.dumps({"EVChargingEvents": []}).encode()
    with (
        running_receiver(landing, EV_RECEIVER_RATE_PER_S="1", EV_RECEIVER_RATE_BURST="3") as (base, _),
        httpx.Client(base_url=base) as client,
    ):
        first = [
            client.post("/ev-charging-events", content=body, headers={**JSON, **auth()}).status_code for _ in range(5)
        ]
        other = client.post("/ev-charging-events", content=body, headers={**JSON, **auth(OTHER_TOKEN)})
        limited = client.post("/ev-charging-events", content=body, headers={**JSON, **auth()})
    assert first[:3] == [202, 202, 202] and first[3:] == [429, 429]
    assert other.status_code == 202  # another token has its own bucket
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert len(landed(landing)) == 4


def test_kill_9_during_a_burst_loses_no_acknowledged_payload(tmp_path):
    landing = tmp_path / "landing"
    acknowledged: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def pusher(base: str, worker: int) -> None:
        with httpx.Client(base_url=base, headers={**JSON, **auth()}, timeout=5) as client:
            n = 0
            while not stop.is_set():
                n += 1
                record = {"MeterID": f"{worker}-{n}", "ReceivedTime": "2024-06-03T12:00:00.00Z", "ChargeW": str(n)}
                body = json.dumps({"EVChargingEvents": [record] * 20}).encode()
                try:
                    answer = client.post("/ev-charging-events", content=body)
                except httpx.TransportError:
                    continue  # the receiver died: this push was never acknowledged
                if answer.status_code == 202:
                    acknowledged.append((answer.json()["file"], body))

    with running_receiver(landing) as (base, process):
        threads = [threading.Thread(target=pusher, args=(base, w)) for w in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(10)
    assert len(acknowledged) >= 200
    for name, body in acknowledged:
        assert (landing / name).read_bytes() == body
    # Whatever else is there is whole: every listed file parses; temporaries are never listed.
    for f in feed.list_landing(landing):
        assert not feed.parse_payload(f.name, f.path.read_bytes()).quarantined


@pytest.mark.parametrize("encode", [avro_schema.encode_container, avro_schema.encode_single_objects])
def test_avro_round_trip_keeps_values_and_millisecond_times(encode):
    record = {
        "ServicePointID": "5000000012",
        "MeterID": "2000000006",
        "TransformerID": "4000000012-05694882",
        "PremiseID": "P1000000008",
        "ReceivedTime": "2024-01-01T23:05:11.08Z",
        "ChargeStartTime": "2024-01-01T23:05:03.41Z",
        "ChargeEndTime": None,
        "ChargeW": "6912.35",
        "ChargeDuration": None,
        "ChargeEnergy": None,
    }
    payload = json.loads(
        avro_schema.to_json_payload(avro_schema.decode(encode([avro_schema.from_json_record(record)])))
    )
    (got,) = payload["EVChargingEvents"]
    assert got["TransformerId"] == "4000000012-05694882" and got["ServicePointId"] == "5000000012"
    assert got["ReceivedTime"] == "2024-01-01T23:05:11.080Z" and got["ChargeStartTime"] == "2024-01-01T23:05:03.410Z"
    assert got["ChargeW"] == 6912.35 and got["ChargeEndTime"] is None


def test_tls_when_a_certificate_is_configured(tmp_path):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    landing = tmp_path / "landing"
    body = json.dumps({"EVChargingEvents": []}).encode()
    with running_receiver(landing, EV_RECEIVER_TLS_CERT=str(cert), EV_RECEIVER_TLS_KEY=str(key)) as (base, _):
        assert base.startswith("https://")
        answer = httpx.post(
            f"{base}/ev-charging-events",
            content=body,
            headers={**JSON, **auth()},
            verify=ssl.create_default_context(cafile=str(cert)),
        )
        with pytest.raises(httpx.TransportError):
            httpx.post(
                base.replace("https://", "http://") + "/ev-charging-events", content=body, headers={**JSON, **auth()}
            )
    assert answer.status_code == 202 and len(landed(landing)) == 1
