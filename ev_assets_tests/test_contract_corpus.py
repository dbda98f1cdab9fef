"""The contract against a corpus of bad inputs: one payload file per case in `corpus/`, and one
manifest (`EXPECTED`, below) saying where every record of every file must end up and why.

Two levels:
- pure: parse_payload + records_frame + apply_contract, record by record, with exact reasons;
- warehouse: the whole corpus in one `ingest_batch` (SQLite, and PostgreSQL when
  EV_TEST_POSTGRES_URL is set): rejected records, quarantined files, accepted events with their
  enrichment, the batch ledger's identities, re-ingestion as a no-op, duplicates across batches
  and restarts, and replay of a rejected record under wider bounds.

The corpus files are written by `corpus/make_corpus.py`; a test checks they still are.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ev_assets import pipeline
from ev_assets.core import feed
from ev_assets.core.contract import REJECTION_CODES, ContractBounds, apply_contract
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import (
    ALL_TABLES,
    EV_BATCHES_PENDING,
    EV_CHARGING_EVENTS,
    EV_FEED_FILES,
    EV_INGEST_BATCHES,
    EV_QUARANTINED_FILES,
    EV_REJECTED_MESSAGES,
)

from .helpers import assert_same_tables, snapshot

CORPUS_DIR = Path(__file__).parent / "corpus"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS_DIR / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = _load_generator()
NOW = corpus.NOW  # 2024-07-01T00:00:00Z: every corpus time is in June 2024
M = timedelta(minutes=1)


# --- the manifest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Where one record must end up. reasons: {(code, spec field or None)} for a rejection."""

    kind: str  # accepted, duplicate (accepted by the contract, not stored twice) or rejected
    enrichment: str = "enriched"
    reasons: frozenset[tuple[str, str | None]] = frozenset()

    @property
    def codes(self) -> set[str]:
        return {code for code, _ in self.reasons}


@dataclass(frozen=True)
class FileOutcome:
    status: str  # parsed, repaired or quarantined
    records: tuple[Outcome, ...] = ()
    error: str | None = None  # for a quarantined file: a substring of the parser's error


A = Outcome("accepted")
U = Outcome("accepted", enrichment="meter_unknown")
D = Outcome("duplicate")


def R(*reasons: str) -> Outcome:
    """A rejection with exactly these reasons, each "code" or "code@SpecField"."""
    pairs = {(r.split("@")[0], r.split("@")[1] if "@" in r else None) for r in reasons}
    return Outcome("rejected", reasons=frozenset(pairs))


def C(*reasons: str) -> Outcome:
    """A conflicting duplicate: valid to the contract, quarantined by the warehouse with these reasons."""
    pairs = {(r.split("@")[0], r.split("@")[1] if "@" in r else None) for r in reasons}
    return Outcome("conflict", reasons=frozenset(pairs))


def parsed(*records: Outcome) -> FileOutcome:
    return FileOutcome("parsed", records)


def repaired(*records: Outcome) -> FileOutcome:
    return FileOutcome("repaired", records)


def quarantined(error: str) -> FileOutcome:
    return FileOutcome("quarantined", error=error)


NOT_AN_OBJECT = R(
    "record_not_readable", "missing_required_field@MeterID", "missing_required_field@ReceivedTime", "no_charge_fields"
)
BAD_W = R("invalid_number@ChargeW")

EXPECTED: dict[str, FileOutcome] = {
    # file level: repaired or quarantined whole
    "trailing_comma_spec_example.json": repaired(
        R("ambiguous_message_type"), A
    ),  # the spec's own record carries both types
    "trailing_commas_everywhere.json": repaired(A, A),
    "not_json_single_quotes.json": quarantined("invalid JSON"),
    "not_json_comment.json": quarantined("invalid JSON"),
    "truncated.json": quarantined("invalid JSON"),
    "empty_file.json": quarantined("invalid JSON"),
    "binary.bin.json": quarantined("not UTF-8"),
    "utf16_le.json": quarantined("not UTF-8"),
    "wrong_top_level_list.json": quarantined("wrong top-level shape"),
    "wrong_top_level_key.json": quarantined("wrong top-level shape"),
    "wrong_top_level_events_object.json": quarantined("wrong top-level shape"),
    "wrong_top_level_null.json": quarantined("wrong top-level shape"),
    "nested_deep.json": quarantined("nested too deeply"),
    "nested_deep_trailing_comma.json": quarantined("nested too deeply"),
    "empty_list.json": parsed(),
    "bom_utf8.json": parsed(A, A),
    "payload_key_case.json": parsed(A),
    # field names and value formats
    "field_case_variants.json": parsed(A, A, A),
    "field_case_conflict.json": parsed(R("record_not_readable"), R("ambiguous_message_type"), A, A, A),
    "chargeduratjion_misspelling.json": parsed(A, A),
    "json_numbers.json": parsed(A, A, A, A),
    "blank_strings_as_null.json": parsed(
        A, R("missing_required_field@MeterID"), A, R("missing_required_field@ReceivedTime")
    ),
    "whitespace_padded_values.json": parsed(A, A),
    "offset_plus_0530.json": parsed(A, A),
    "offsets_other_than_z.json": parsed(A, A, A, A, A),
    "timestamp_without_offset.json": parsed(
        R("timestamp_without_offset@ChargeStartTime"),
        R("timestamp_without_offset@ReceivedTime"),
        R("timestamp_without_offset@ChargeEndTime"),
        A,
    ),
    "invalid_timestamp.json": parsed(
        R("invalid_timestamp@ChargeStartTime"),
        R("invalid_timestamp@ChargeStartTime"),
        R("invalid_timestamp@ChargeStartTime"),
        R("invalid_timestamp@ReceivedTime"),
        R("invalid_timestamp@ChargeStartTime"),
        R("invalid_timestamp@ChargeEndTime"),
        A,
    ),
    "invalid_number.json": parsed(
        BAD_W, BAD_W, BAD_W, BAD_W, R("invalid_number@ChargeEnergy"), R("invalid_number@ChargeDuration"), A
    ),
    "nan_infinity.json": parsed(
        BAD_W, BAD_W, BAD_W, R("invalid_number@ChargeEnergy"), R("invalid_number@ChargeEnergy"), A
    ),
    # ranges and plausibility
    "non_positive_charge_w.json": parsed(
        R("non_positive_value@ChargeW", "charge_w_implausible@ChargeW"),
        R("non_positive_value@ChargeW", "charge_w_implausible@ChargeW"),
        A,
    ),
    "zero_energy.json": parsed(R("non_positive_value@ChargeEnergy"), R("non_positive_value@ChargeEnergy"), A),
    "negative_duration.json": parsed(R("non_positive_value@ChargeDuration"), R("non_positive_value@ChargeDuration"), A),
    "charge_w_implausible_high.json": parsed(R("charge_w_implausible@ChargeW"), R("charge_w_implausible@ChargeW"), A),
    "charge_w_implausible_low.json": parsed(R("charge_w_implausible@ChargeW"), R("charge_w_implausible@ChargeW"), A),
    "energy_implausible.json": parsed(R("energy_implausible@ChargeEnergy"), R("energy_implausible@ChargeEnergy"), A),
    "received_before_event.json": parsed(R("received_before_event"), R("received_before_event"), A),
    "received_in_future.json": parsed(R("received_in_future@ReceivedTime"), A, A),
    "event_in_future.json": parsed(R("event_in_future"), R("event_in_future", "received_before_event"), A, A),
    # message type
    "ambiguous_both_types.json": parsed(
        R("ambiguous_message_type"), R("ambiguous_message_type"), R("ambiguous_message_type"), A
    ),
    "no_charge_fields.json": parsed(R("no_charge_fields"), R("no_charge_fields"), A),
    "half_a_start.json": parsed(R("missing_required_field@ChargeW"), R("missing_required_field@ChargeStartTime"), A),
    "end_without_duration.json": parsed(
        R("missing_required_field@ChargeDuration"),
        R("missing_required_field@ChargeEnergy"),
        R("missing_required_field@ChargeEndTime", "missing_required_field@ChargeDuration"),
        A,
    ),
    # identity
    "missing_meter_id.json": parsed(R("missing_required_field@MeterID"), R("missing_required_field@MeterID"), A),
    "missing_received_time.json": parsed(
        R("missing_required_field@ReceivedTime"), R("missing_required_field@ReceivedTime"), A
    ),
    "identifier_length.json": parsed(U, R("invalid_identifier@MeterID"), R("invalid_identifier@ESN")),
    "unknown_meter.json": parsed(U, A),
    "multiple_failures.json": parsed(
        A,
        R(
            "missing_required_field@MeterID",
            "timestamp_without_offset@ReceivedTime",
            "non_positive_value@ChargeW",
            "charge_w_implausible@ChargeW",
            "invalid_identifier@PremiseID",
        ),
    ),
    # hostile and odd content
    "injection_sql.json": parsed(
        R("invalid_identifier@MeterID"), R("invalid_timestamp@ReceivedTime"), A, R("invalid_identifier@ServicePointID")
    ),
    "huge_string.json": parsed(R("invalid_identifier@MeterID"), BAD_W, A),
    "unicode_identifiers.json": parsed(
        R("invalid_identifier@MeterID"),
        R("invalid_identifier@MeterID"),
        R("invalid_identifier@MeterID"),
        R("invalid_identifier@ESN"),
        A,
        A,
    ),
    "unicode_in_extra_field.json": parsed(A, A),
    "nul_and_control_characters.json": parsed(R("invalid_identifier@MeterID"), R("invalid_identifier@MeterID"), A, A),
    "lone_surrogate.json": parsed(R("record_not_readable", "invalid_identifier@MeterID"), A, A),
    "wrong_type_object.json": parsed(
        R("record_not_readable", "invalid_number@ChargeW"),
        R("record_not_readable", "invalid_identifier@MeterID"),
        R("record_not_readable", "invalid_number@ChargeW"),
        R("record_not_readable", "invalid_timestamp@ReceivedTime"),
        A,
    ),
    "unknown_extra_fields.json": parsed(A, A, A),
    "record_not_object.json": parsed(*[NOT_AN_OBJECT] * 6, A),
    "records_all_strings.json": parsed(NOT_AN_OBJECT, NOT_AN_OBJECT),
    "records_all_arrays.json": parsed(NOT_AN_OBJECT),
    # duplicates: the contract accepts both; the warehouse stores the earliest received once
    "duplicate_within_file.json": parsed(A, D, D, A),
    "duplicate_of_other_file.json": parsed(D, A),  # bom_utf8.json's start, received a minute later
    # the same end with another energy: accepted by the contract, quarantined as a conflict by the warehouse
    "conflicting_duplicate.json": parsed(A, C("conflicting_duplicate@ChargeEnergy"), D, A),
}


def _slot(name: str) -> datetime:
    return corpus.slot(name)


# Typed values of some accepted records (pure level): what normalisation must produce.
ACCEPTED_VALUES: dict[tuple[str, int], dict[str, Any]] = {
    ("field_case_variants.json", 0): {
        "message_type": "start",
        "meter_id": "2000000003",
        "service_point_id": "5000000015",
        "meter_number": "9100000003",
        "esn": "1.18.240.3.416733.23.63.9100000003",
        "transformer_id": "4000000002-80462809",
        "premise_id": "P1000000032",
        "charge_w": 7200.5,
        "charge_start_time": _slot("field_case_variants.json"),
    },
    ("field_case_variants.json", 1): {
        "message_type": "end",
        "meter_id": "2000000015",
        "service_point_id": "5000000015",
        "charge_duration": 3.0,
        "charge_energy_wh": 21600.0,
        "charge_end_time": _slot("field_case_variants.json") + 10 * M,
    },
    ("field_case_conflict.json", 2): {"meter_id": "2000000003"},
    ("field_case_conflict.json", 3): {"charge_w": 7200.5, "extra_fields": None},
    ("chargeduratjion_misspelling.json", 0): {"message_type": "end", "charge_duration": 4.0, "extra_fields": None},
    ("json_numbers.json", 0): {"charge_w": 7200.5},
    ("json_numbers.json", 1): {"charge_energy_wh": 21600.0, "charge_duration": 3.0},
    ("json_numbers.json", 2): {"charge_energy_wh": 21600.0, "charge_duration": 3.0},
    ("json_numbers.json", 3): {"meter_id": "2000000042", "charge_w": 7200.0},
    ("blank_strings_as_null.json", 0): {
        "message_type": "start",
        "meter_number": None,
        "premise_id": None,
        "charge_end_time": None,
        "charge_duration": None,
        "charge_energy_wh": None,
    },
    ("blank_strings_as_null.json", 2): {"message_type": "end", "charge_start_time": None, "charge_w": None},
    ("whitespace_padded_values.json", 0): {
        "meter_id": "2000000003",
        "charge_w": 7200.5,
        "received_time": _slot("whitespace_padded_values.json") + timedelta(seconds=5.12),
    },
    ("offset_plus_0530.json", 0): {
        "charge_start_time": _slot("offset_plus_0530.json"),
        "received_time": _slot("offset_plus_0530.json") + timedelta(seconds=7),
        "message_time": _slot("offset_plus_0530.json"),
    },
    ("offsets_other_than_z.json", 0): {
        "charge_start_time": _slot("offsets_other_than_z.json") + timedelta(seconds=0.25)
    },
    ("offsets_other_than_z.json", 1): {"charge_start_time": _slot("offsets_other_than_z.json") + 10 * M},
    ("offsets_other_than_z.json", 2): {
        "charge_start_time": _slot("offsets_other_than_z.json") + 20 * M + timedelta(seconds=0.5)
    },
    ("offsets_other_than_z.json", 3): {"charge_start_time": _slot("offsets_other_than_z.json") + 30 * M},
    ("offsets_other_than_z.json", 4): {
        "charge_end_time": _slot("offsets_other_than_z.json") + 40 * M + timedelta(microseconds=123_456),
    },
    ("identifier_length.json", 0): {"meter_id": "M" * 64},
    ("unicode_identifiers.json", 4): {"meter_id": "2000000069"},  # written as "\u0032000000069"
    ("duplicate_within_file.json", 2): {"charge_start_time": _slot("duplicate_within_file.json")},  # +02:00 form
    ("trailing_commas_everywhere.json", 0): {
        "extra_fields": json.dumps({"Note": "kept as is: ,} and , ] stay inside strings"}, separators=(",", ":"))
    },
    ("unicode_in_extra_field.json", 0): {
        "extra_fields": json.dumps(
            {"Notiz": "Ladung über Nacht ⚡", "備考": "夜間充電 🚗"}, ensure_ascii=False, separators=(",", ":")
        )
    },
    ("injection_sql.json", 2): {
        "extra_fields": json.dumps({"Comment": "'); DELETE FROM ev_rejected_messages; --"}, separators=(",", ":"))
    },
    ("nul_and_control_characters.json", 2): {
        "extra_fields": json.dumps({"Note": "bell \u0007 nul \u0000 end"}, separators=(",", ":"))
    },
}

# Extra fields the contract must keep aside (as JSON text per field) rather than reject.
EXTRA_FIELDS: dict[tuple[str, int], dict[str, Any]] = {
    ("unknown_extra_fields.json", 0): {"FirmwareVersion": "4.2.1", "SignalStrength": "-67"},
    ("unknown_extra_fields.json", 1): {
        "IsDCFast": "false",
        "Location": '{"lat": "35.66", "lon": "-79.1"}',
        "Tags": '["home", "l2"]',
    },
    ("lone_surrogate.json", 1): {"Note\\udc00": "x"},
}


def _records_as_in_file(name: str) -> list[Any]:
    """The records of a corpus file as its text says (trailing commas removed where needed)."""
    text = (CORPUS_DIR / name).read_bytes().decode("utf-8-sig")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = json.loads(feed.remove_trailing_commas(text))
    return next(v for k, v in payload.items() if k.lower() == "evchargingevents")


def _same_json(a: Any, b: Any) -> bool:
    # Canonical text: NaN equals NaN, key order does not matter, surrogates stay escaped.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _meter_id_as_received(record: Any) -> str | None | type[Ellipsis]:
    """MeterID as the rejected row should carry it (stripped, blank as null); ... when the value
    is not a plain string (then it is not checked)."""
    if not isinstance(record, dict):
        return None
    values = [v for k, v in record.items() if k.lower() == "meterid"]
    if not values or values[0] is None:
        return None
    value = values[0]
    if not isinstance(value, str) or feed._unicode_text(value) != value:
        return ...
    # NUL (which PostgreSQL text cannot hold) is written as its JSON escape
    return value.strip().replace("\x00", "\\u0000") or None


# --- the corpus itself ------------------------------------------------------------------------------


def test_every_corpus_file_has_an_expectation():
    on_disk = {p.name for p in CORPUS_DIR.glob("*.json")}
    assert on_disk == set(EXPECTED), (
        f"files without an expectation: {sorted(on_disk - set(EXPECTED))}; "
        f"expectations without a file: {sorted(set(EXPECTED) - on_disk)}"
    )


def test_corpus_files_are_what_the_generator_writes():
    built = corpus.build()
    assert set(built) == set(EXPECTED)
    stale = [name for name, content in built.items() if (CORPUS_DIR / name).read_bytes() != content]
    assert not stale, f"re-run `uv run python ev_assets_tests/corpus/make_corpus.py`: {stale}"


def test_every_rejection_code_has_a_corpus_case():
    exercised = {code for f in EXPECTED.values() for r in f.records for code in r.codes}
    missing = sorted(set(REJECTION_CODES) - exercised)
    assert not missing, f"rejection codes no corpus file exercises (add a case to corpus/): {missing}"
    assert exercised <= set(REJECTION_CODES), sorted(exercised - set(REJECTION_CODES))


def test_every_valid_neighbour_case_mixes_bad_and_good():
    """Each record-level case proves its bad records leave their neighbours alone."""
    exempt = {"records_all_strings.json", "records_all_arrays.json", "empty_list.json"}
    for name, expected in EXPECTED.items():
        if expected.status == "quarantined" or name in exempt:
            continue
        assert any(r.kind == "accepted" for r in expected.records), name


# --- pure level --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_case_pure(name: str):
    expected = EXPECTED[name]
    content = (CORPUS_DIR / name).read_bytes()
    parsed_file = feed.parse_payload(name, content)

    assert parsed_file.status == expected.status, parsed_file.error
    assert parsed_file.content == content
    if expected.status == "quarantined":
        assert expected.error in parsed_file.error
        assert parsed_file.records == []
        assert feed.records_frame([parsed_file]).height == 0
        return
    assert parsed_file.error is None

    records = feed.records_frame([parsed_file])
    assert records.height == len(expected.records)
    assert records["record_index"].to_list() == list(range(len(expected.records)))
    result = apply_contract(records, ContractBounds(), now=NOW)
    assert result.accepted.height + result.rejected.height == records.height

    accepted = {row["record_index"]: row for row in result.accepted.iter_rows(named=True)}
    rejected = {row["record_index"]: row for row in result.rejected.iter_rows(named=True)}
    for index, outcome in enumerate(expected.records):
        where = f"{name}[{index}]"
        if outcome.kind in ("accepted", "duplicate", "conflict"):
            assert index in accepted, f"{where} rejected: {rejected.get(index, {}).get('reasons')}"
            continue
        assert index in rejected, f"{where} accepted, expected {sorted(outcome.reasons)}"
        row = rejected[index]
        assert row["file_name"] == name and row["file_sha256"] == parsed_file.sha256
        assert set(row["reason_codes"].split(",")) == outcome.codes, where
        reasons = json.loads(row["reasons"])
        got = [(r["code"], r["field"]) for r in reasons]
        assert len(got) == len(set(got)), f"{where}: a reason listed twice: {got}"
        assert set(got) == outcome.reasons, where
        for reason in reasons:
            assert reason["message"].startswith(REJECTION_CODES[reason["code"]]), where

    for (case, index), values in ACCEPTED_VALUES.items():
        if case == name:
            row = accepted[index]
            assert {k: row[k] for k in values} == values, f"{name}[{index}]"
    for (case, index), extras in EXTRA_FIELDS.items():
        if case == name:
            # (a record's extra_fields also lists, as null, the extra fields of other records of its file)
            kept = {k: v for k, v in json.loads(accepted[index]["extra_fields"]).items() if v is not None}
            assert kept == extras, f"{name}[{index}]"


def test_trailing_comma_inside_a_string_is_left_alone():
    text = '{"a": "x,}", "b": "y, ]", "c": [1, 2,], }'
    assert feed.remove_trailing_commas(text) == '{"a": "x,}", "b": "y, ]", "c": [1, 2] }'


# --- warehouse level ---------------------------------------------------------------------------------


@pytest.fixture
def reference_loaded(warehouse, small_utility):
    pipeline.load_reference(warehouse, small_utility, pipeline.PipelineSettings(), now=NOW)
    return warehouse


def _expected_count(kind: str) -> int:
    return sum(r.kind == kind for f in EXPECTED.values() for r in f.records)


def _expected_records(kind: str) -> dict:
    """(file, record index) -> expected outcome, for every corpus record of this kind."""
    return {
        (name, i): outcome
        for name, f in EXPECTED.items()
        for i, outcome in enumerate(f.records)
        if outcome.kind == kind
    }


def _ledger_row(warehouse: Warehouse, batch_id: str) -> dict:
    rows = warehouse.read(EV_INGEST_BATCHES, warehouse.column(EV_INGEST_BATCHES, "batch_id") == batch_id)
    assert rows.height == 1
    return rows.row(0, named=True)


def _assert_ledger_reconciles(row: dict) -> None:
    assert row["records_read"] == row["accepted"] + row["duplicates"] + row["rejected"], row
    assert row["files_read"] == row["files_parsed"] + row["files_quarantined"] + row["files_already_read"], row
    assert row["reconciled"] is True


def test_corpus_in_warehouse(reference_loaded):
    warehouse = reference_loaded
    names = sorted(EXPECTED)
    report = pipeline.ingest_batch(
        warehouse, "corpus", [CORPUS_DIR / n for n in names], pipeline.PipelineSettings(), now=NOW
    )

    # the batch ledger: counts from the manifest, and both identities
    statuses = [f.status for f in EXPECTED.values()]
    expected_counts = {
        "files_read": len(names),
        "files_parsed": len(names) - statuses.count("quarantined"),
        "files_repaired": statuses.count("repaired"),
        "files_quarantined": statuses.count("quarantined"),
        "files_already_read": 0,
        "records_read": sum(len(f.records) for f in EXPECTED.values()),
        "accepted": _expected_count("accepted"),
        "duplicates": _expected_count("duplicate"),
        "rejected": _expected_count("rejected") + _expected_count("conflict"),
    }
    assert {k: getattr(report, k) for k in expected_counts} == expected_counts
    assert report.conflicts == _expected_count("conflict")
    assert report.reconciled
    ledger = _ledger_row(warehouse, "corpus")
    assert {k: ledger[k] for k in expected_counts} == expected_counts
    _assert_ledger_reconciles(ledger)
    assert ledger["processed_at"] == NOW

    # accepted records: stored once, where they came from, with their enrichment
    events = warehouse.read(EV_CHARGING_EVENTS)
    stored = {(r["file_name"], r["record_index"]): r for r in events.iter_rows(named=True)}
    want = _expected_records("accepted")
    assert set(stored) == set(want)
    for key, outcome in want.items():
        assert stored[key]["enrichment_status"] == outcome.enrichment, key
        assert stored[key]["batch_id"] == "corpus"
    assert events["message_id"].n_unique() == events.height
    injected = stored[("injection_sql.json", 2)]
    assert json.loads(injected["extra_fields"]) == {"Comment": "'); DELETE FROM ev_rejected_messages; --"}
    assert json.loads(stored[("nul_and_control_characters.json", 2)]["extra_fields"]) == {
        "Note": "bell \u0007 nul \u0000 end"
    }
    assert json.loads(stored[("unicode_in_extra_field.json", 0)]["extra_fields"]) == {
        "Notiz": "Ladung über Nacht ⚡",
        "備考": "夜間充電 🚗",
    }

    # rejected records: in ev_rejected_messages with the raw record as received and every reason
    rejected = warehouse.read(EV_REJECTED_MESSAGES)
    rows = {(r["file_name"], r["record_index"]): r for r in rejected.iter_rows(named=True)}
    want = _expected_records("rejected") | _expected_records("conflict")
    assert set(rows) == set(want)
    in_file = {name: _records_as_in_file(name) for name, f in EXPECTED.items() if f.status != "quarantined"}
    for (name, index), outcome in want.items():
        row = rows[(name, index)]
        where = f"{name}[{index}]"
        assert set(row["reason_codes"].split(",")) == outcome.codes, where
        assert {(r["code"], r["field"]) for r in json.loads(row["reasons"])} == outcome.reasons, where
        assert row["status"] == "quarantined" and row["replayed_at"] is None, where
        assert row["batch_id"] == "corpus" and row["quarantined_at"] == NOW, where
        original = in_file[name][index]
        raw = json.loads(row["raw_record"])
        if (name, index) == ("huge_string.json", 0):  # compare sizes first: a diff of 1 MB helps nobody
            assert len(raw["MeterID"]) == len(original["MeterID"]) == 1_000_000, where
        assert _same_json(raw, original), f"{where}: raw_record is not the record as received"
        meter_id = _meter_id_as_received(original)
        if meter_id is not ...:
            assert row["meter_id"] == meter_id, where
    assert rows[("injection_sql.json", 0)]["meter_id"] == "1'; DROP TABLE ev_charging_events;--"
    assert len(rows[("huge_string.json", 0)]["meter_id"]) == 1_000_000
    assert rows[("nul_and_control_characters.json", 0)]["meter_id"] == "2000000003\\u0000"
    assert json.loads(rows[("nul_and_control_characters.json", 0)]["raw_record"])["MeterID"] == "2000000003\x00"

    # quarantined files: kept whole, byte for byte, with the parser's error
    files = warehouse.read(EV_QUARANTINED_FILES)
    by_name = {r["file_name"]: r for r in files.iter_rows(named=True)}
    assert set(by_name) == {n for n, f in EXPECTED.items() if f.status == "quarantined"}
    for name, row in by_name.items():
        content = (CORPUS_DIR / name).read_bytes()
        assert bytes(row["content"]) == content, name
        assert row["size_bytes"] == len(content)
        assert EXPECTED[name].error in row["error"], (name, row["error"])
        assert row["batch_id"] == "corpus" and row["quarantined_at"] == NOW

    # the file ledger: every file once, with its status and record count
    ledger_files = {r["file_name"]: r for r in warehouse.read(EV_FEED_FILES).iter_rows(named=True)}
    assert set(ledger_files) == set(names)
    for name, f in EXPECTED.items():
        assert (ledger_files[name]["status"], ledger_files[name]["records"]) == (f.status, len(f.records)), name

    # the injection strings were data, not SQL: every table is still there
    for spec in ALL_TABLES:
        warehouse.count(spec)


def test_reingesting_the_corpus_changes_nothing(reference_loaded):
    warehouse = reference_loaded
    paths = [CORPUS_DIR / n for n in sorted(EXPECTED)]
    settings = pipeline.PipelineSettings()
    pipeline.ingest_batch(warehouse, "corpus", paths, settings, now=NOW)
    before = snapshot(warehouse)

    # the same batch again (a restart of the same run): no table changes at all
    again = pipeline.ingest_batch(warehouse, "corpus", paths, settings, now=NOW + timedelta(hours=1))
    assert (again.files_already_read, again.records_read) == (len(paths), 0)
    assert_same_tables(before, snapshot(warehouse))

    # the same files under another batch: only that batch's ledger row is new, all zeros but files,
    # and the batch queued for pairing like every ledgered batch (a no-op pairing: no events)
    later = NOW + timedelta(hours=2)
    other = pipeline.ingest_batch(warehouse, "corpus-again", paths, settings, now=later)
    assert other.reconciled
    after = snapshot(warehouse)
    bookkeeping = (EV_INGEST_BATCHES.name, EV_BATCHES_PENDING.name)
    assert_same_tables({t: f for t, f in before.items() if t not in bookkeeping}, after)
    assert after[EV_BATCHES_PENDING.name]["batch_id"].to_list() == ["corpus", "corpus-again"]
    ledger = _ledger_row(warehouse, "corpus-again")
    assert {k: ledger[k] for k in ("files_read", "files_already_read", "files_parsed", "files_quarantined")} == {
        "files_read": len(paths),
        "files_already_read": len(paths),
        "files_parsed": 0,
        "files_quarantined": 0,
    }
    assert (ledger["records_read"], ledger["accepted"], ledger["duplicates"], ledger["rejected"]) == (0, 0, 0, 0)
    _assert_ledger_reconciles(ledger)
    assert after[EV_INGEST_BATCHES.name].height == before[EV_INGEST_BATCHES.name].height + 1


def test_duplicates_across_batches_and_restarts(warehouse, tmp_path):
    settings = pipeline.PipelineSettings()
    first = pipeline.ingest_batch(warehouse, "b1", [CORPUS_DIR / "bom_utf8.json"], settings, now=NOW)
    assert (first.accepted, first.duplicates) == (2, 0)
    # a restart: a new Warehouse object on the same database, a later batch with a new file that
    # repeats one of the stored messages (received later, so a duplicate, not a new event)
    restarted = Warehouse(warehouse.url)
    try:
        second = pipeline.ingest_batch(
            restarted, "b2", [CORPUS_DIR / "duplicate_of_other_file.json"], settings, now=NOW
        )
        assert (second.records_read, second.accepted, second.duplicates, second.rejected) == (2, 1, 1, 0)
        _assert_ledger_reconciles(_ledger_row(restarted, "b2"))
        # the same message again under another file name and offset: still the same event
        record = _records_as_in_file("bom_utf8.json")[0]
        start = datetime.fromisoformat(record["ChargeStartTime"].replace("Z", "+00:00"))
        record = record | {"ChargeStartTime": start.astimezone(UTC).replace(tzinfo=None).isoformat() + "-00:00"}
        copy = tmp_path / "copy_with_other_offset.json"
        copy.write_text(json.dumps({"EVChargingEvents": [record]}))
        third = pipeline.ingest_batch(restarted, "b3", [copy], settings, now=NOW)
        assert (third.records_read, third.accepted, third.duplicates) == (1, 0, 1)
        assert restarted.count(EV_CHARGING_EVENTS) == 3
    finally:
        restarted.dispose()


def test_replay_with_wider_bounds_releases_the_record(warehouse):
    settings = pipeline.PipelineSettings()
    name = "charge_w_implausible_high.json"  # records 0 (50 kW) and 1 (21.12001 kW) rejected
    report = pipeline.ingest_batch(warehouse, "corpus", [CORPUS_DIR / name], settings, now=NOW)
    assert (report.accepted, report.rejected) == (1, 2)
    rej = warehouse.table(EV_REJECTED_MESSAGES).c
    rejected = warehouse.read(EV_REJECTED_MESSAGES).sort("record_index")
    assert rejected["reason_codes"].to_list() == ["charge_w_implausible", "charge_w_implausible"]

    # wider, but not wide enough for 50 kW: record 1 is released, record 0 stays with its reasons
    first_replay = NOW + timedelta(days=1)
    wider = replace(settings, bounds=ContractBounds(charge_w_max=30_000))
    replays = rejected.select("rejection_id", "raw_record")
    partly = pipeline.replay_rejected(warehouse, wider, replays, "replay-1", now=first_replay)
    assert (partly.records_read, partly.accepted, partly.duplicates, partly.rejected) == (2, 1, 0, 1)
    _assert_ledger_reconciles(_ledger_row(warehouse, "replay-1"))
    after = {r["record_index"]: r for r in warehouse.read(EV_REJECTED_MESSAGES).iter_rows(named=True)}
    assert (after[1]["status"], after[1]["replayed_at"]) == ("replayed", first_replay)
    assert (after[0]["status"], after[0]["replayed_at"], after[0]["reason_codes"]) == (
        "quarantined",
        None,
        "charge_w_implausible",
    )

    # wide enough: record 0 is accepted too
    second_replay = NOW + timedelta(days=2)
    widest = replace(settings, bounds=ContractBounds(charge_w_max=60_000))
    still = warehouse.read(EV_REJECTED_MESSAGES, rej.status == "quarantined").select("rejection_id", "raw_record")
    released = pipeline.replay_rejected(warehouse, widest, still, "replay-2", now=second_replay)
    assert (released.records_read, released.accepted, released.duplicates, released.rejected) == (1, 1, 0, 0)
    _assert_ledger_reconciles(_ledger_row(warehouse, "replay-2"))
    after = {r["record_index"]: r for r in warehouse.read(EV_REJECTED_MESSAGES).iter_rows(named=True)}
    assert (after[0]["status"], after[0]["replayed_at"]) == ("replayed", second_replay)

    events = warehouse.read(EV_CHARGING_EVENTS).sort("charge_w")
    assert events["charge_w"].to_list() == [21120.0, 21120.01, 50000.0]
    assert events["batch_id"].to_list() == ["corpus", "replay-1", "replay-2"]

    # replaying a released record again is a duplicate, not a second event
    again = pipeline.replay_rejected(warehouse, widest, replays, "replay-3", now=second_replay)
    assert (again.records_read, again.accepted, again.duplicates, again.rejected) == (2, 0, 2, 0)
    _assert_ledger_reconciles(_ledger_row(warehouse, "replay-3"))
    assert warehouse.count(EV_CHARGING_EVENTS) == 3
