"""The contract on what the receiver stores for Avro pushes: the Avro field spellings, typed values
(JSON numbers, ISO times with milliseconds), and one message identity across channels."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from ev_assets.core import avro_schema, events, feed
from ev_assets.core.contract import ContractBounds, apply_contract
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS

NOW = datetime(2024, 7, 1, tzinfo=UTC)

JSON_START = {
    "ServicePointID": "5000000012",
    "MeterID": "2000000006",
    "MeterNumber": "9100000002",
    "ESN": "1.16.210.3.887097.27.28.9100000002",
    "TransformerID": "4000000012-05694882",
    "PremiseID": "P1000000008",
    "ReceivedTime": "2024-06-03T23:05:11.08Z",
    "ChargeStartTime": "2024-06-03T23:05:03.4105Z",
    "ChargeEndTime": None,
    "ChargeW": "6912.35",
    "ChargeDuration": None,
    "ChargeEnergy": None,
}
JSON_END = {
    **JSON_START,
    "ReceivedTime": "2024-06-04T01:10:00.00Z",
    "ChargeStartTime": None,
    "ChargeEndTime": "2024-06-04T01:05:03.41Z",
    "ChargeW": None,
    "ChargeDuration": "2",
    "ChargeEnergy": "14400.5",
}


def accepted_of(name: str, content: bytes) -> pl.DataFrame:
    parsed = feed.parse_payload(name, content)
    assert not parsed.quarantined
    result = apply_contract(feed.records_frame([parsed]), ContractBounds(), NOW)
    assert result.rejected.is_empty(), result.rejected.to_dicts()
    return result.accepted


def avro_payload(records) -> bytes:
    """What the receiver stores for an Avro push of these records."""
    encoded = avro_schema.encode_single_objects([avro_schema.from_json_record(r) for r in records])
    return avro_schema.to_json_payload(avro_schema.decode(encoded))


def test_avro_spellings_and_typed_values_pass_the_contract():
    content = avro_payload([JSON_START, JSON_END])
    stored = json.loads(content)["EVChargingEvents"]
    assert {"ServicePointId", "TransformerId", "PremiseId"} <= set(stored[0])
    assert isinstance(stored[1]["ChargeEnergy"], float) and stored[0]["ChargeStartTime"].endswith(".410Z")
    accepted = accepted_of("avro.json", content).sort("message_type", descending=True)
    start, end = accepted.to_dicts()
    assert (start["service_point_id"], start["transformer_id"], start["premise_id"]) == (
        "5000000012",
        "4000000012-05694882",
        "P1000000008",
    )
    assert start["charge_w"] == 6912.35 and end["charge_duration"] == 2.0 and end["charge_energy_wh"] == 14400.5
    assert end["charge_end_time"] == datetime(2024, 6, 4, 1, 5, 3, 410_000, tzinfo=UTC)


def test_json_numbers_are_read_like_numeric_strings():
    typed = {**JSON_START, "ChargeW": 6912.35}
    a = accepted_of("a.json", json.dumps({"EVChargingEvents": [typed]}).encode())
    b = accepted_of("b.json", json.dumps({"EVChargingEvents": [JSON_START]}).encode())
    assert a["charge_w"].to_list() == b["charge_w"].to_list() == [6912.35]


def test_one_message_by_stream_and_by_avro_is_one_event():
    """Times are compared at millisecond precision: ".4105Z" by JSON and ".410Z" by Avro are the
    same message; a millisecond apart they are not."""
    by_json = accepted_of("stream.json", json.dumps({"EVChargingEvents": [JSON_START, JSON_END]}).encode())
    by_avro = accepted_of("avro.json", avro_payload([JSON_START, JSON_END]))
    other = accepted_of("other.json", avro_payload([{**JSON_START, "ChargeStartTime": "2024-06-03T23:05:03.411Z"}]))

    def ids(frame):
        return sorted(frame.select(events.message_id())["message_id"].to_list())

    assert ids(by_json) == ids(by_avro)
    assert ids(other)[0] not in ids(by_json)
    accepted = pl.concat([by_json, by_avro, other], how="diagonal_relaxed")
    rows = events.to_events(accepted, batch_id="b", tz="America/New_York", ingested_at=datetime(2024, 6, 5, tzinfo=UTC))
    new, duplicates, conflicts = events.split_duplicates(rows, pl.DataFrame(schema=EV_CHARGING_EVENTS.polars_schema))
    assert (new.height, duplicates, conflicts.height) == (3, 2, 0)
    # Ids of millisecond times are unchanged by the truncation (as stored before it).
    assert "2000000006|end|2024-06-04T01:05:03.410000Z" in ids(by_json)
