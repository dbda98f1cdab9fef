"""Writes the contract test corpus: one payload file per case, beside this script.

    uv run python ev_assets_tests/corpus/make_corpus.py

The files are committed; this script is how they were made, and `test_contract_corpus.py`
checks that the files on disk are still exactly what it writes (edit a case here, not by hand,
then re-run it). What each record is expected to become is not decided here: the manifest
`EXPECTED` in `test_contract_corpus.py` says it, record by record.

Conventions:
- every case gets its own time slot (`slot(case)`), so valid records of different files never
  share meter, message type and event time (they would be duplicates of each other);
- valid neighbours use meters the small test utility (`generate_utility(meters=300, seed=11)`)
  knows from 2024-01-01 on, so the warehouse test can expect them enriched;
- all times are in June 2024; the tests run the contract with now = 2024-07-01T00:00:00Z.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent
NOW = datetime(2024, 7, 1, tzinfo=UTC)
# Meters of generate_utility(meters=300, seed=11), in effect from 2024-01-01 without change.
KNOWN_METERS = ("2000000003", "2000000015", "2000000042", "2000000069")
UNKNOWN_METER = "2999999999"
DROP = object()  # an override that removes the field from the record

FIELD_ORDER = (
    "ServicePointID",
    "MeterID",
    "MeterNumber",
    "ESN",
    "TransformerID",
    "PremiseID",
    "ReceivedTime",
    "ChargeStartTime",
    "ChargeEndTime",
    "ChargeW",
    "ChargeDuration",
    "ChargeEnergy",
)

# The spec's payload example, byte for byte (trailing comma included).
SPEC_EXAMPLE = """{
"EVChargingEvents": [
{
"ServicePointID": "xxxxxxxxxx",
"MeterID": "xxxxxxxxxx",
"MeterNumber": "xxxxxxxxxx",
"ESN": "x.xx.xxx.x.xxxxxx.xx.xx.xxxxxxxxxx",
"TransformerID": "xxxxxxxxxx-xxxxxxxx",
"PremiseID": "Pxxxxxxxxxx",
"ReceivedTime": "2023-09-13T00:29:55.55Z",
"ChargeStartTime": "2023-09-13T00:29:55.55Z",
"ChargeEndTime": "2023-09-13T00:29:55.55Z",
"ChargeW": "1237.375166",
"ChargeDuration": "22",
"ChargeEnergy": "56.24432574",
}
]
}
"""


def iso(moment: datetime) -> str:
    """The feed's format: UTC, two fractional digits, Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 10_000:02d}Z"


def _record(meter: str, received: datetime, values: dict, overrides: dict) -> dict:
    record = {
        "ServicePointID": "5000000015",
        "MeterID": meter,
        "MeterNumber": "9100000003",
        "ESN": "1.18.240.3.416733.23.63.9100000003",
        "TransformerID": "4000000002-80462809",
        "PremiseID": "P1000000032",
        "ReceivedTime": iso(received),
        "ChargeStartTime": None,
        "ChargeEndTime": None,
        "ChargeW": None,
        "ChargeDuration": None,
        "ChargeEnergy": None,
    }
    record |= values
    for key, value in overrides.items():
        if value is DROP:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def start(at: datetime, meter: str = KNOWN_METERS[0], w: object = "7200.50", **overrides) -> dict:
    """A valid start message at `at` (received 5.12 s later) unless overridden."""
    return _record(meter, at + timedelta(seconds=5.12), {"ChargeStartTime": iso(at), "ChargeW": w}, overrides)


def end(
    at: datetime, meter: str = KNOWN_METERS[1], energy: object = "21600.00", duration: object = "3", **overrides
) -> dict:
    """A valid end message at `at` (received 5.12 s later) unless overridden."""
    values = {"ChargeEndTime": iso(at), "ChargeDuration": duration, "ChargeEnergy": energy}
    return _record(meter, at + timedelta(seconds=5.12), values, overrides)


def payload(records: list, *, ascii_only: bool = False) -> bytes:
    """The simulator's layout: one record per line."""
    lines = ",\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records)
    return ('{"EVChargingEvents": [\n' + lines + "\n]}\n").encode("utf-8")


CASES: dict[str, Callable[[datetime], bytes]] = {}


def case(name: str):
    def register(build: Callable[[datetime], bytes]) -> Callable[[datetime], bytes]:
        CASES[name] = build
        return build

    return register


def slot(name: str) -> datetime:
    """The case's own 4-hour slot in June 2024 (from the case's position in CASES)."""
    return datetime(2024, 6, 1, 12, tzinfo=UTC) + timedelta(hours=4 * list(CASES).index(name))


M = timedelta(minutes=1)

# --- file level ------------------------------------------------------------------------------------


@case("trailing_comma_spec_example.json")
def _(t):
    # The spec's example verbatim (a record of both types, so ambiguous), then a valid neighbour
    # written in the same style, trailing comma included.
    neighbour = ",\n".join(f'"{k}": {json.dumps(v)}' for k, v in start(t).items())
    return SPEC_EXAMPLE.replace("}\n]\n}", "},\n{\n" + neighbour + ",\n}\n]\n}").encode()


@case("trailing_commas_everywhere.json")
def _(t):
    a = json.dumps(start(t, Note="kept as is: ,} and , ] stay inside strings"))[:-1] + ", }"
    b = json.dumps(end(t + 10 * M))[:-1] + ",\n\t}"
    return ('{"EVChargingEvents": [' + a + ",\n" + b + ",\n],\n}").encode()


@case("not_json_single_quotes.json")
def _(t):
    return payload([start(t)]).replace(b'"', b"'")


@case("not_json_comment.json")
def _(t):
    return b"// exported by the agent\n" + payload([start(t)])


@case("truncated.json")
def _(t):
    full = payload([start(t), end(t + 10 * M)])
    return full[: len(full) // 2 + 7]


@case("empty_file.json")
def _(t):
    return b""


@case("binary.bin.json")
def _(t):
    # What a gzip-compressed payload dropped under a .json name looks like: not UTF-8 at all.
    return bytes([0x1F, 0x8B, 0x08, 0x00, 0xFF, 0xFE, 0x00, 0x80, 0xC3, 0x28]) + bytes(range(256))


@case("utf16_le.json")
def _(t):
    return payload([start(t)]).decode().encode("utf-16")


@case("wrong_top_level_list.json")
def _(t):
    return json.dumps([start(t), end(t + 10 * M)]).encode()


@case("wrong_top_level_key.json")
def _(t):
    return json.dumps({"ChargingEvents": [start(t)]}).encode()


@case("wrong_top_level_events_object.json")
def _(t):
    return json.dumps({"EVChargingEvents": start(t)}).encode()


@case("wrong_top_level_null.json")
def _(t):
    return b"null\n"


@case("nested_deep.json")
def _(t):
    # A record field nested 100,000 levels deep: the parser gives up, the file is quarantined.
    deep = "[" * 100_000 + "]" * 100_000
    return ('{"EVChargingEvents": [' + json.dumps(start(t))[:-1] + ', "Extra": ' + deep + "}]}").encode()


@case("nested_deep_trailing_comma.json")
def _(t):
    # The same depth after a trailing comma: the strict parse stops at the comma, the parse of the
    # repaired text is the one that meets the depth.
    deep = "[" * 100_000 + "]" * 100_000
    return (
        '{"EVChargingEvents": ['
        + json.dumps(start(t))[:-1]
        + ", },\n"
        + json.dumps(end(t + 10 * M))[:-1]
        + ', "Extra": '
        + deep
        + "}]}"
    ).encode()


@case("empty_list.json")
def _(t):
    return b'{"EVChargingEvents": []}\n'


@case("bom_utf8.json")
def _(t):
    return b"\xef\xbb\xbf" + payload([start(t), end(t + 10 * M)])


@case("payload_key_case.json")
def _(t):
    return json.dumps({"evChargingEvents": [start(t)]}).encode()


# --- field names and value formats -------------------------------------------------------------------


@case("field_case_variants.json")
def _(t):
    s = start(t)
    e = end(t + 10 * M)
    renamed_start = {
        "ServicePointId": s["ServicePointID"],
        "meterid": s["MeterID"],
        "METERNUMBER": s["MeterNumber"],
        "esn": s["ESN"],
        "TransformerId": s["TransformerID"],
        "premiseId": s["PremiseID"],
        "receivedtime": s["ReceivedTime"],
        "chargeStartTime": s["ChargeStartTime"],
        "chargeW": s["ChargeW"],
    }
    renamed_end = {
        "SERVICEPOINTID": e["ServicePointID"],
        "MeterId": e["MeterID"],
        "ReceivedTIME": e["ReceivedTime"],
        "chargeendtime": e["ChargeEndTime"],
        "Chargeduration": e["ChargeDuration"],
        "CHARGEENERGY": e["ChargeEnergy"],
    }
    return payload([renamed_start, renamed_end, start(t + 20 * M)])


@case("chargeduratjion_misspelling.json")
def _(t):
    misspelt = end(t, ChargeDuration=DROP, ChargeDuratjion="4")
    return payload([misspelt, start(t + 10 * M)])


@case("json_numbers.json")
def _(t):
    return payload(
        [
            start(t, w=7200.5),
            end(t + 10 * M, energy=21600, duration=3),
            end(t + 20 * M, energy=2.16e4, duration=3.0),
            start(t + 30 * M, meter=2000000042, w="7.2e3"),  # an identifier as a JSON number too
        ]
    )


@case("blank_strings_as_null.json")
def _(t):
    return payload(
        [
            start(t, ChargeEndTime="", ChargeDuration="  ", ChargeEnergy="", MeterNumber="", PremiseID=" "),
            start(t + 10 * M, MeterID=""),
            end(t + 20 * M, ChargeStartTime="", ChargeW="\t"),
            start(t + 30 * M, ReceivedTime="   "),
        ]
    )


@case("whitespace_padded_values.json")
def _(t):
    padded = start(t, MeterID=" 2000000003 ", ChargeW=" 7200.5 ")
    padded["ReceivedTime"] = " " + padded["ReceivedTime"] + "\n"
    return payload([padded, end(t + 10 * M)])


@case("offset_plus_0530.json")
def _(t):
    # 20:00+05:30 is 14:30Z: the record's times written in Indian Standard Time.
    local = t.astimezone(UTC).replace(tzinfo=None)
    return payload(
        [
            start(
                t,
                ChargeStartTime=(local + timedelta(hours=5, minutes=30)).isoformat() + "+05:30",
                ReceivedTime=(local + timedelta(hours=5, minutes=30, seconds=7)).isoformat() + "+05:30",
            ),
            end(t + 10 * M),
        ]
    )


@case("offsets_other_than_z.json")
def _(t):
    naive = t.replace(tzinfo=None)
    return payload(
        [
            start(t, ChargeStartTime=(naive - timedelta(hours=4)).isoformat() + ".25-04:00"),
            start(t + 10 * M, ChargeStartTime=(naive + 10 * M).isoformat() + "+00:00"),
            start(t + 20 * M, ChargeStartTime=(naive + 20 * M).isoformat() + ".5z"),
            start(t + 30 * M, ChargeStartTime=(naive + 30 * M + timedelta(hours=9)).isoformat() + "+0900"),
            end(t + 40 * M, ChargeEndTime=(naive + 40 * M - timedelta(hours=10)).isoformat() + ".123456-10:00"),
        ]
    )


@case("timestamp_without_offset.json")
def _(t):
    naive = t.replace(tzinfo=None)
    return payload(
        [
            start(t, ChargeStartTime=naive.isoformat() + ".00"),
            start(t + 10 * M, ReceivedTime=(naive + 10 * M).isoformat()),
            end(t + 20 * M, ChargeEndTime=(naive + 20 * M).isoformat() + ".55"),
            start(t + 30 * M),
        ]
    )


@case("invalid_timestamp.json")
def _(t):
    return payload(
        [
            start(t, ChargeStartTime="yesterday evening"),
            start(t + 10 * M, ChargeStartTime="2024-13-45T25:61:00Z"),
            start(t + 20 * M, ChargeStartTime="2024-06-03"),
            start(t + 30 * M, ReceivedTime="1717444800"),
            start(t + 40 * M, ChargeStartTime=iso(t + 40 * M)[:-1] + "+25:00"),
            end(t + 50 * M, ChargeEndTime="2024-02-30T10:00:00Z"),
            start(t + 60 * M),
        ]
    )


@case("invalid_number.json")
def _(t):
    return payload(
        [
            start(t, w="abc"),
            start(t + 10 * M, w="7,200.5"),
            start(t + 20 * M, w="0x1C20"),
            start(t + 30 * M, w="1.2.3"),
            end(t + 40 * M, energy="21600Wh"),
            end(t + 50 * M, duration="three"),
            start(t + 60 * M),
        ]
    )


@case("nan_infinity.json")
def _(t):
    records = [
        json.dumps(start(t, w="NaN")),
        json.dumps(start(t + 10 * M, w="__NAN__")).replace('"__NAN__"', "NaN"),
        json.dumps(start(t + 20 * M, w="Infinity")),
        json.dumps(end(t + 30 * M, energy="__NINF__")).replace('"__NINF__"', "-Infinity"),
        json.dumps(end(t + 40 * M, energy="__BIG__")).replace('"__BIG__"', "1e999"),
        json.dumps(start(t + 50 * M)),
    ]
    return ('{"EVChargingEvents": [\n' + ",\n".join(records) + "\n]}\n").encode()


# --- ranges and plausibility -------------------------------------------------------------------------


@case("non_positive_charge_w.json")
def _(t):
    return payload([start(t, w="0"), start(t + 10 * M, w="-7200"), start(t + 20 * M)])


@case("zero_energy.json")
def _(t):
    return payload([end(t, energy="0"), end(t + 10 * M, energy="-0.5"), end(t + 20 * M)])


@case("negative_duration.json")
def _(t):
    return payload([end(t, duration="-2"), end(t + 10 * M, duration="0"), end(t + 20 * M)])


@case("charge_w_implausible_high.json")
def _(t):
    return payload([start(t, w="50000"), start(t + 10 * M, w="21120.01"), start(t + 20 * M, w="21120")])


@case("charge_w_implausible_low.json")
def _(t):
    return payload([start(t, w="500"), start(t + 10 * M, w="899.99"), start(t + 20 * M, w="900")])


@case("energy_implausible.json")
def _(t):
    return payload([end(t, energy="2000000"), end(t + 10 * M, energy="150000.01"), end(t + 20 * M, energy="150000")])


@case("received_before_event.json")
def _(t):
    return payload(
        [
            start(t, ReceivedTime=iso(t - 20 * M)),
            end(t + 10 * M, ReceivedTime=iso(t + 10 * M - timedelta(hours=1))),
            start(t + 20 * M, ReceivedTime=iso(t + 20 * M - 9 * M)),  # within the 10-minute skew
        ]
    )


@case("received_in_future.json")
def _(t):
    return payload(
        [
            start(NOW - timedelta(hours=1), ReceivedTime=iso(NOW + 11 * M)),
            start(NOW - timedelta(hours=2), ReceivedTime=iso(NOW + 5 * M)),  # within the skew
            start(t),
        ]
    )


@case("event_in_future.json")
def _(t):
    return payload(
        [
            start(NOW + 15 * M, ReceivedTime=iso(NOW + 9 * M)),
            end(NOW + timedelta(days=1), ReceivedTime=iso(NOW - timedelta(days=1))),
            start(NOW + 5 * M, ReceivedTime=iso(NOW + 5 * M)),  # within the skew
            start(t),
        ]
    )


# --- message type ----------------------------------------------------------------------------------


@case("ambiguous_both_types.json")
def _(t):
    return payload(
        [
            start(t, ChargeEndTime=iso(t + timedelta(hours=3)), ChargeDuration="3", ChargeEnergy="21600"),
            start(t + 10 * M, ChargeEnergy="21600"),
            end(t + 20 * M, ChargeW="7200"),
            start(t + 30 * M),
        ]
    )


@case("no_charge_fields.json")
def _(t):
    return payload(
        [
            start(t, ChargeStartTime=None, ChargeW=None),
            start(
                t + 10 * M,
                ChargeStartTime=DROP,
                ChargeW=DROP,
                ChargeEndTime=DROP,
                ChargeDuration=DROP,
                ChargeEnergy=DROP,
            ),
            end(t + 20 * M),
        ]
    )


@case("half_a_start.json")
def _(t):
    return payload([start(t, ChargeW=None), start(t + 10 * M, ChargeStartTime=DROP), start(t + 20 * M)])


@case("end_without_duration.json")
def _(t):
    return payload(
        [
            end(t, ChargeDuration=None),
            end(t + 10 * M, ChargeEnergy=DROP),
            end(t + 20 * M, ChargeEndTime=None, ChargeDuration=None),
            end(t + 30 * M),
        ]
    )


# --- identity ----------------------------------------------------------------------------------------


@case("missing_meter_id.json")
def _(t):
    return payload([start(t, MeterID=DROP), end(t + 10 * M, MeterID=None), start(t + 20 * M)])


@case("missing_received_time.json")
def _(t):
    return payload([start(t, ReceivedTime=DROP), end(t + 10 * M, ReceivedTime=None), start(t + 20 * M)])


@case("identifier_length.json")
def _(t):
    return payload(
        [start(t, meter="M" * 64), start(t + 10 * M, meter="M" * 65), start(t + 20 * M, ESN="-starts-with-dash")]
    )


@case("unknown_meter.json")
def _(t):
    return payload([start(t, meter=UNKNOWN_METER), start(t + 10 * M)])


@case("multiple_failures.json")
def _(t):
    naive = (t + 10 * M).replace(tzinfo=None).isoformat()
    return payload([start(t), start(t + 10 * M, MeterID=DROP, ReceivedTime=naive, w="-5", PremiseID="P 1")])


# --- hostile and odd content ----------------------------------------------------------------------


@case("injection_sql.json")
def _(t):
    return payload(
        [
            start(t, MeterID="1'; DROP TABLE ev_charging_events;--"),
            start(t + 10 * M, ReceivedTime=iso(t + 10 * M) + "' OR '1'='1"),
            start(t + 20 * M, Comment="'); DELETE FROM ev_rejected_messages; --"),
            end(t + 30 * M, ServicePointID='x" OR ""="'),
        ]
    )


@case("huge_string.json")
def _(t):
    return payload(
        [
            start(t, MeterID="A" * 1_000_000),
            start(t + 10 * M, w="1" + "0" * 400),
            start(t + 20 * M),
        ]
    )


@case("unicode_identifiers.json")
def _(t):
    return payload(
        [
            start(t, MeterID="Zähler-42"),
            start(t + 10 * M, MeterID="２０００００００03"),
            start(t + 20 * M, MeterID="⚡🚗"),
            start(t + 30 * M, ESN="1.18.240.3\u200f.416733"),
            start(t + 40 * M, meter=KNOWN_METERS[3]),  # written \u0032... below: the same ASCII id
            end(t + 50 * M),
        ],
        ascii_only=True,
    ).replace(b'"MeterID": "2000000069"', b'"MeterID": "\\u0032000000069"')


@case("unicode_in_extra_field.json")
def _(t):
    return payload([start(t, Notiz="Ladung über Nacht ⚡", 備考="夜間充電 🚗"), end(t + 10 * M)])


@case("nul_and_control_characters.json")
def _(t):
    return payload(
        [
            start(t, MeterID="2000000003\u0000"),
            start(t + 10 * M, MeterID="2000\u00070000003"),
            start(t + 20 * M, Note="bell \u0007 nul \u0000 end"),
            end(t + 30 * M),
        ]
    )


@case("lone_surrogate.json")
def _(t):
    return payload(
        [
            start(t, MeterID="\ud800"),
            start(t + 10 * M, **{"Note\udc00": "x"}),
            start(t + 20 * M),
        ],
        ascii_only=True,
    )


@case("wrong_type_object.json")
def _(t):
    return payload(
        [
            start(t, w={"value": "7200"}),
            start(t + 10 * M, MeterID=["2000000003"]),
            start(t + 20 * M, w=True),
            end(t + 30 * M, ReceivedTime=False),
            start(t + 40 * M),
        ]
    )


@case("unknown_extra_fields.json")
def _(t):
    return payload(
        [
            start(t, FirmwareVersion="4.2.1", SignalStrength=-67),
            start(t + 10 * M, IsDCFast=False, Location={"lat": 35.66, "lon": -79.10}, Tags=["home", "l2"]),
            end(t + 20 * M),
        ]
    )


@case("record_not_object.json")
def _(t):
    return payload(["a string", 42, None, [], ["2000000003", "7200"], True, start(t)])


@case("records_all_strings.json")
def _(t):
    # No valid neighbour on purpose: the bug this guards against needs every record to be a string.
    return payload(["2000000003", "7200.5"])


@case("records_all_arrays.json")
def _(t):
    # No valid neighbour on purpose: every record a list of strings once turned one record into three.
    return payload([["2000000003", "7200.5", "2024-06-01T00:00:00Z"]])


@case("duplicate_within_file.json")
def _(t):
    first = start(t)
    later_other_offset = start(
        t,
        ChargeStartTime=(t.replace(tzinfo=None) + timedelta(hours=2)).isoformat() + ".00+02:00",
        ReceivedTime=iso(t + M),
    )
    return payload([first, dict(first), later_other_offset, end(t + 10 * M)])


@case("duplicate_of_other_file.json")
def _(t):
    # The start message of bom_utf8.json again, received a minute later.
    other = slot("bom_utf8.json")
    return payload([start(other, ReceivedTime=iso(other + M)), start(t)])


@case("field_case_conflict.json")
def _(t):
    # One field under two spellings: the same value is fine, a blank one gives way, two different
    # values are never chosen between.
    return payload(
        [
            start(t, meterid="2000000015"),
            start(t + 10 * M, chargeenergy="", ChargeEnergy="21600"),
            start(t + 20 * M, METERID=" 2000000003"),
            start(t + 30 * M, chargew="", ChargeW="7200.5"),
            end(t + 40 * M),
        ]
    )


@case("conflicting_duplicate.json")
def _(t):
    # The same end (meter, type, time) twice with different energy: 14.4 vs 22.3 kWh. The first
    # received is accepted; the second is a conflict, not a duplicate. The third is the first
    # again under another form (another offset, more digits, a later ReceivedTime): a duplicate.
    first = end(t, energy="14400", duration="2")
    again = end(
        t,
        energy="14400.000001",
        duration="2.0",
        ReceivedTime=iso(t + 2 * M),
        ChargeEndTime=(t.replace(tzinfo=None) + timedelta(hours=2)).isoformat() + ".000+02:00",
    )
    return payload([first, end(t, energy="22300", duration="2", ReceivedTime=iso(t + M)), again, start(t + M)])


def build() -> dict[str, bytes]:
    return {name: make(slot(name)) for name, make in CASES.items()}


def main() -> None:
    for path in CORPUS_DIR.glob("*.json"):
        path.unlink()
    for name, content in build().items():
        (CORPUS_DIR / name).write_bytes(content)
    print(f"wrote {len(CASES)} files to {CORPUS_DIR}", file=sys.stderr)


if __name__ == "__main__":
    main()
