"""Property tests of the contract: random mixtures of valid and corrupted records, in 1-3 files.

Whatever the mixture: every record read is accepted or rejected (nothing lost, nothing twice),
every valid record is accepted, every corrupted one rejected, whatever its neighbours. At the
warehouse level (SQLite) the batch ledger's identity holds with duplicates too, across batches.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.core.contract import ContractBounds, apply_contract
from ev_assets.warehouse import migrate
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_INGEST_BATCHES, EV_REJECTED_MESSAGES

NOW = datetime(2024, 7, 1, tzinfo=UTC)
BASE = datetime(2024, 6, 1, tzinfo=UTC)
METERS = ("2000000003", "2000000015", "2000000042", "2000000069")
BOUNDS = ContractBounds()


# --- valid records ------------------------------------------------------------------------------------


@dataclass
class Message:
    """One generated record: its identity, its payload form, whether it was corrupted."""

    meter: str
    kind: str  # start or end
    time: datetime
    record: Any
    corruption: str | None = None

    @property
    def identity(self) -> tuple[str, str, datetime]:
        return (self.meter, self.kind, self.time)


def _timestamp(moment: datetime, offset_minutes: int, z: bool) -> str:
    if offset_minutes == 0 and z:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-4] + "Z"
    local = (moment + timedelta(minutes=offset_minutes)).replace(tzinfo=None)
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return local.isoformat(timespec="microseconds") + f"{sign}{hours:02d}:{minutes:02d}"


def _number(value: float | int, as_json_number: bool) -> Any:
    return value if as_json_number else str(value)


_OFFSETS = st.sampled_from([0, 0, 330, -240, 60, -600])


@st.composite
def valid_message(draw, slot: int) -> Message:
    """A valid start or end message; `slot` makes its (meter, type, time) unique."""
    kind = draw(st.sampled_from(["start", "end"]))
    meter = METERS[slot % len(METERS)]
    # whole centiseconds: the feed's precision, and exact in every offset form
    time = BASE + timedelta(minutes=7 * slot, milliseconds=10 * draw(st.integers(0, 5999)))
    received = time + timedelta(milliseconds=10 * draw(st.integers(0, 60_000)))  # within 10 minutes
    numbers_as_json = draw(st.booleans())
    offset, z = draw(_OFFSETS), draw(st.booleans())
    record: dict[str, Any] = {
        "ServicePointID": "5000000015",
        "MeterID": meter,
        "MeterNumber": draw(st.sampled_from(["9100000003", "", None])),
        "ESN": "1.18.240.3.416733.23.63.9100000003",
        "TransformerID": "4000000002-80462809",
        "PremiseID": "P1000000032",
        "ReceivedTime": _timestamp(received, draw(_OFFSETS), z),
        "ChargeStartTime": None,
        "ChargeEndTime": None,
        "ChargeW": None,
        "ChargeDuration": None,
        "ChargeEnergy": None,
    }
    if kind == "start":
        record["ChargeStartTime"] = _timestamp(time, offset, z)
        w = draw(st.floats(BOUNDS.charge_w_min, BOUNDS.charge_w_max, allow_nan=False))
        record["ChargeW"] = _number(w, numbers_as_json)
        for other in ("ChargeEndTime", "ChargeDuration", "ChargeEnergy"):
            record[other] = draw(st.sampled_from([None, ""]))
    else:
        record["ChargeEndTime"] = _timestamp(time, offset, z)
        record["ChargeDuration"] = _number(draw(st.integers(1, 24)), numbers_as_json)
        energy = draw(st.floats(1.0, BOUNDS.max_session_wh, allow_nan=False))
        record["ChargeEnergy"] = _number(energy, numbers_as_json)
        if draw(st.booleans()):  # the spec's misspelling
            record["ChargeDuratjion"] = record.pop("ChargeDuration")
        for other in ("ChargeStartTime", "ChargeW"):
            record[other] = draw(st.sampled_from([None, ""]))
    if draw(st.booleans()):  # field names match case-insensitively
        case = draw(st.sampled_from([str.lower, str.upper]))
        record = {case(k): v for k, v in record.items()}
    if draw(st.booleans()):  # unknown fields are kept aside, whatever they hold
        record["FirmwareVersion"] = draw(st.sampled_from(["4.2.1", "ünïcode ⚡", "'; DROP TABLE x;--"]))
        record["Flags"] = draw(st.sampled_from([True, {"dc": False}, ["a", 1], 17]))
    return Message(meter, kind, time, record)


# --- corruptions: each makes any valid record fail at least one rule -------------------------------------


def _key(record: dict, name: str) -> str:
    """The record's own spelling of a spec field (it may be lower or upper case)."""
    return next(k for k in record if k.lower() in (name.lower(), "chargeduratjion" if name == "ChargeDuration" else ""))


def _number_field(message: Message) -> str:
    return "ChargeW" if message.kind == "start" else "ChargeEnergy"


def _time_field(message: Message) -> str:
    return "ChargeStartTime" if message.kind == "start" else "ChargeEndTime"


def _set(record: dict, name: str, value: Any) -> dict:
    return record | {_key(record, name): value}


def _drop(record: dict, name: str) -> dict:
    key = _key(record, name)
    return {k: v for k, v in record.items() if k != key}


CORRUPTIONS: dict[str, Any] = {
    "blank_meter": lambda m, r, d: _set(r, "MeterID", d(st.sampled_from(["", "   ", None]))),
    "drop_meter": lambda m, r, d: _drop(r, "MeterID"),
    "drop_received_time": lambda m, r, d: _drop(r, "ReceivedTime"),
    "bad_identifier": lambda m, r, d: _set(r, "MeterID", d(st.sampled_from(["meter 1", "x" * 65, "Zähler", "1';--"]))),
    "garble_number": lambda m, r, d: _set(
        r, _number_field(m), d(st.sampled_from(["12abc", "1,5", "NaN", "inf", "--1"]))
    ),
    "negative_value": lambda m, r, d: _set(r, _number_field(m), d(st.sampled_from(["-1", "0", "-0.0"]))),
    "wrong_type": lambda m, r, d: _set(r, _number_field(m), d(st.sampled_from([True, {"v": "1"}, ["1"]]))),
    "drop_offset": lambda m, r, d: _set(r, _time_field(m), m.time.replace(tzinfo=None).isoformat()),
    "bad_timestamp": lambda m, r, d: _set(
        r, _time_field(m), d(st.sampled_from(["soon", "2024-06-31T00:00:00Z", "1717444800"]))
    ),
    "make_ambiguous": lambda m, r, d: r | ({"ChargeEnergy": "100"} if m.kind == "start" else {"ChargeW": "7200"}),
    "drop_required": lambda m, r, d: _drop(
        r,
        d(
            st.sampled_from(
                ["ChargeW", "ChargeStartTime"]
                if m.kind == "start"
                else ["ChargeEnergy", "ChargeDuration", "ChargeEndTime"]
            )
        ),
    ),
    "no_charge_fields": lambda m, r, d: {k: v for k, v in r.items() if not k.lower().startswith("charge")},
    "implausible": lambda m, r, d: _set(r, _number_field(m), "50000" if m.kind == "start" else "1000000"),
    "received_before_event": lambda m, r, d: _set(r, "ReceivedTime", _timestamp(m.time - timedelta(hours=1), 0, True)),
    "received_in_future": lambda m, r, d: _set(r, "ReceivedTime", _timestamp(NOW + timedelta(days=2), 0, True)),
    "not_an_object": lambda m, r, d: d(st.sampled_from(["record", 42, None, [], ["a", "b"]])),
}


@st.composite
def mixtures(draw, max_records: int = 25):
    """(files, messages): 1-3 files of shuffled valid, corrupted and duplicated messages."""
    slots = draw(st.lists(st.integers(0, 5000), min_size=1, max_size=max_records, unique=True))
    messages = []
    for slot in slots:
        message = draw(valid_message(slot))
        corruption = draw(st.one_of(st.none(), st.sampled_from(sorted(CORRUPTIONS))))
        if corruption is not None:
            record = CORRUPTIONS[corruption](message, message.record, draw)
            message = Message(message.meter, message.kind, message.time, record, corruption)
        messages.append(message)
    # some valid messages sent again (same meaning, another form): duplicates of each other
    valid = [m for m in messages if m.corruption is None]
    if valid:
        for original in draw(st.lists(st.sampled_from(valid), max_size=4)):
            again = dict(original.record)
            again.pop("FirmwareVersion", None)
            messages.append(Message(original.meter, original.kind, original.time, again))
    messages = draw(st.permutations(messages))
    n_files = draw(st.integers(1, min(3, len(messages))))
    cuts = (
        sorted(
            draw(st.lists(st.integers(1, len(messages) - 1), min_size=n_files - 1, max_size=n_files - 1, unique=True))
        )
        if n_files > 1
        else []
    )
    bounds = [0, *cuts, len(messages)]
    files = []
    for i in range(len(bounds) - 1):
        chunk = messages[bounds[i] : bounds[i + 1]]
        trailing_comma = draw(st.booleans())
        files.append((f"mixture_{i}.json", chunk, _payload([m.record for m in chunk], trailing_comma)))
    return files


def _payload(records: list, trailing_comma: bool) -> bytes:
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    return ('{"EVChargingEvents": [\n' + body + (",\n" if trailing_comma else "\n") + "]}").encode()


# --- pure level ---------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(files=mixtures())
def test_every_record_is_accepted_or_rejected_and_valid_ones_are_accepted(files):
    parsed = [feed.parse_payload(name, content) for name, _, content in files]
    assert all(not p.quarantined for p in parsed), [p.error for p in parsed]
    records = feed.records_frame(parsed)
    result = apply_contract(records, BOUNDS, now=NOW)

    by_position = {(name, i): m for name, chunk, _ in files for i, m in enumerate(chunk)}
    # records read = accepted + rejected: every record once, none lost, none twice
    assert records.height == len(by_position)
    assert result.accepted.height + result.rejected.height == records.height
    accepted = set(result.accepted.select("file_name", "record_index").iter_rows())
    rejected = set(result.rejected.select("file_name", "record_index").iter_rows())
    assert not accepted & rejected
    assert accepted | rejected == set(by_position)

    for position, message in by_position.items():
        if message.corruption is None:
            assert position in accepted, (
                position,
                message.record,
                result.rejected.filter((pl.col("file_name") == position[0]) & (pl.col("record_index") == position[1]))[
                    "reasons"
                ].to_list(),
            )
        else:
            assert position in rejected, (position, message.corruption, message.record)
    # identified by meaning too: the accepted identities are exactly the valid messages'
    got = set(result.accepted.select("meter_id", "message_type", "message_time").iter_rows())
    assert got == {m.identity for m in by_position.values() if m.corruption is None}
    # every rejection names at least one rule
    assert (result.rejected["reason_codes"].str.len_chars() > 0).all()


# --- warehouse level ------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(files=mixtures(max_records=15), split=st.integers(0, 3))
def test_ingest_ledger_reconciles_with_duplicates_across_batches(files, split):
    """Files ingested in two batches (the second may repeat a file of the first): per batch,
    records_read = accepted + duplicates + rejected; overall each valid message stored once."""
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp)
        paths = []
        for name, _, content in files:
            (landing / name).write_bytes(content)
            paths.append(landing / name)
        split = min(split, len(paths))
        # b2 reads the first file again when b1 read it (a file seen twice: already read)
        batches = {"b1": paths[:split], "b2": paths[split:] + paths[:1][:split]}
        migrate.upgrade(f"sqlite:///{landing / 'ev.sqlite'}")
        warehouse = Warehouse(f"sqlite:///{landing / 'ev.sqlite'}")
        try:
            reports = {
                batch_id: pipeline.ingest_batch(warehouse, batch_id, batch_paths, pipeline.PipelineSettings(), now=NOW)
                for batch_id, batch_paths in batches.items()
            }
            ledger = {r["batch_id"]: r for r in warehouse.read(EV_INGEST_BATCHES).iter_rows(named=True)}
            for batch_id, report in reports.items():
                row = ledger[batch_id]
                assert row["records_read"] == row["accepted"] + row["duplicates"] + row["rejected"]
                assert row["files_read"] == row["files_parsed"] + row["files_quarantined"] + row["files_already_read"]
                assert row["reconciled"] and report.reconciled
                assert row["records_read"] == report.records_read

            messages = [m for _, chunk, _ in files for m in chunk]
            valid = [m for m in messages if m.corruption is None]
            distinct = {m.identity for m in valid}
            total = {
                k: sum(r[k] for r in ledger.values()) for k in ("records_read", "accepted", "duplicates", "rejected")
            }
            # the first file, read again in b2, is already read: not counted twice
            assert total["records_read"] == len(messages)
            assert total["accepted"] == len(distinct)
            assert total["duplicates"] == len(valid) - len(distinct)
            assert total["rejected"] == len(messages) - len(valid)
            assert warehouse.count(EV_CHARGING_EVENTS) == len(distinct)
            assert warehouse.count(EV_REJECTED_MESSAGES) == total["rejected"]
            stored = warehouse.read(EV_CHARGING_EVENTS)
            assert set(stored.select("meter_id", "message_type", "message_time").iter_rows()) == distinct
            assert set(stored["enrichment_status"].to_list()) <= {"meter_unknown"}  # no reference loaded
        finally:
            warehouse.dispose()
