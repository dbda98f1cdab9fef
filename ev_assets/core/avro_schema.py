"""The stream's Avro form: the `EVAwarenessCollection` record (DOMAIN.md, "Pushed stream"), its
single-object encoding, and the conversion of decoded records to the JSON payload form.

Pure: fastavro and the standard library; no Dagster, no database, no HTTP.

- Identity fields are nullable strings spelled as the vendor's Avro schema spells them
  (`ServicePointId`, `MeterID`, `MeterNumber`, `ESN`, `TransformerId`, `PremiseId`); the feed
  matches field names case-insensitively, so they need no renaming.
- `ReceivedTime`, `ChargeStartTime`, `ChargeEndTime` are `long` with logical type
  `timestamp-millis` (UTC epoch milliseconds); the published schema does not mark the charge times
  nullable although one of them is absent in every message, so here they are nullable.
- `ChargeW`, `ChargeDuration`, `ChargeEnergy`: the published excerpt stops before them; accepted as
  null, double or string.

Two encodings are read:
- **object container files** (magic `Obj\\x01`): self-describing, read with the writer's schema,
  so a sender's own spelling of a field (`TransformerID`) reaches the contract as sent;
- **single-object encoding** (marker `C3 01`, the 8-byte little-endian CRC-64-AVRO fingerprint of
  the schema's parsing canonical form, then the binary record); a body may hold several such
  objects one after another. Only the schema below is known: another fingerprint is refused.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

NAMESPACE = "Itron.Shared.Contracts.DistributedIntelligence.EVAwareness"
RECORD_NAME = "EVAwarenessCollection"

_TIMESTAMP_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}


def _nullable(kind: Any) -> list[Any]:
    return ["null", kind]


SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": RECORD_NAME,
    "namespace": NAMESPACE,
    "fields": [
        *(
            {"name": name, "type": _nullable("string"), "default": None}
            for name in (
                "ServicePointId",
                "MeterID",
                "MeterNumber",
                "ESN",
                "TransformerId",
                "PremiseId",
            )
        ),
        {"name": "ReceivedTime", "type": _TIMESTAMP_MILLIS},
        {"name": "ChargeStartTime", "type": _nullable(_TIMESTAMP_MILLIS), "default": None},
        {"name": "ChargeEndTime", "type": _nullable(_TIMESTAMP_MILLIS), "default": None},
        *(
            {"name": name, "type": ["null", "double", "string"], "default": None}
            for name in (
                "ChargeW",
                "ChargeDuration",
                "ChargeEnergy",
            )
        ),
    ],
}
PARSED_SCHEMA = parse_schema(SCHEMA)
CANONICAL_FORM = to_parsing_canonical_form(PARSED_SCHEMA)
FINGERPRINT = bytes.fromhex(fingerprint(CANONICAL_FORM, "CRC-64-AVRO"))
SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONTAINER_MAGIC = b"Obj\x01"


class AvroPayloadError(ValueError):
    """The body is not Avro this receiver can decode (the message says why)."""


# --- decoding ----------------------------------------------------------------------------------


def decode(body: bytes) -> list[dict[str, Any]]:
    """The records of an Avro body: an object container file or single-object encoded records."""
    if body.startswith(CONTAINER_MAGIC):
        return _decode_container(body)
    if body.startswith(SINGLE_OBJECT_MARKER):
        return _decode_single_objects(body)
    raise AvroPayloadError(
        "not Avro: expected an object container file (starting Obj\\x01) or single-object encoding (starting C3 01)"
    )


def _decode_container(body: bytes) -> list[dict[str, Any]]:
    try:
        records = list(fastavro.reader(io.BytesIO(body)))
    except Exception as exc:  # fastavro raises many kinds (ValueError, EOFError, SchemaParseException)
        raise AvroPayloadError(f"undecodable Avro container file: {type(exc).__name__}: {exc}") from exc
    if not all(isinstance(r, dict) for r in records):
        raise AvroPayloadError("the Avro container's records are not records (objects)")
    return records


def _decode_single_objects(body: bytes) -> list[dict[str, Any]]:
    stream = io.BytesIO(body)
    records = []
    while stream.tell() < len(body):
        header = stream.read(10)
        if len(header) < 10 or header[:2] != SINGLE_OBJECT_MARKER:
            raise AvroPayloadError(
                f"single-object encoding: no C3 01 marker and fingerprint at byte {stream.tell() - len(header)}"
            )
        if header[2:] != FINGERPRINT:
            raise AvroPayloadError(
                f"single-object encoding: unknown schema fingerprint {header[2:].hex()} "
                f"(this receiver knows {RECORD_NAME} with fingerprint {FINGERPRINT.hex()})"
            )
        try:
            records.append(fastavro.schemaless_reader(stream, PARSED_SCHEMA, None))
        except Exception as exc:
            raise AvroPayloadError(
                f"undecodable single-object record #{len(records)}: {type(exc).__name__}: {exc}"
            ) from exc
    return records


# --- to the JSON payload form ------------------------------------------------------------------


def iso_utc(moment: datetime) -> str:
    """`2024-06-03T23:05:03.410Z`: UTC with milliseconds (microseconds only when they are there)."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    fraction = f"{moment.microsecond // 1000:03d}" if moment.microsecond % 1000 == 0 else f"{moment.microsecond:06d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)  # not valid JSON as a number: the contract rejects it as invalid_number
    return value


def to_json_payload(records: list[dict[str, Any]]) -> bytes:
    """`{"EVChargingEvents": [...]}` with the Avro field names as they are, times as ISO-8601 UTC
    with milliseconds and numbers as JSON numbers: what the feed contract reads."""
    converted = [{key: _json_value(value) for key, value in record.items()} for record in records]
    return json.dumps({"EVChargingEvents": converted}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- encoding (senders, tests and the simulator) -------------------------------------------------


def encode_single_objects(records: list[dict[str, Any]]) -> bytes:
    """Records in single-object encoding, one after another."""
    out = io.BytesIO()
    for record in records:
        out.write(SINGLE_OBJECT_MARKER + FINGERPRINT)
        fastavro.schemaless_writer(out, PARSED_SCHEMA, record)
    return out.getvalue()


def encode_container(records: list[dict[str, Any]], codec: str = "deflate") -> bytes:
    """Records as an object container file."""
    out = io.BytesIO()
    fastavro.writer(out, PARSED_SCHEMA, records, codec=codec)
    return out.getvalue()


AVRO_FIELD: dict[str, str] = {field["name"].lower(): field["name"] for field in SCHEMA["fields"]}


def _parse_time(text: str | None) -> datetime | None:
    if text in (None, ""):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _parse_number(value: Any) -> float | str | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def from_json_record(record: dict[str, Any]) -> dict[str, Any]:
    """A JSON payload record (spec spelling, numbers as strings) as an Avro record of this schema."""
    out: dict[str, Any] = {name: None for name in AVRO_FIELD.values()}
    for key, value in record.items():
        name = AVRO_FIELD.get(key.lower())
        if name is None:
            continue
        if name.endswith("Time"):
            out[name] = _parse_time(value)
        elif name.startswith("Charge"):
            out[name] = _parse_number(value)
        else:
            out[name] = value
    return out
