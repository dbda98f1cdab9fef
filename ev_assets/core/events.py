"""Event stage: accepted contract output -> rows of the event table, and duplicate detection.

Pure polars. A message's identity is (meter, message type, the time it reports, to the millisecond): the same start
or end sent twice, in one batch or across batches, is one event (the issue's duplicate rule).
Two records with one identity but different content (CONTENT_TIMES compared to the millisecond,
CONTENT_NUMBERS to a relative 1e-6; ReceivedTime, identity fields and extra fields ignored, so a
re-delivery by another channel or format is a duplicate) are a conflict: the first accepted
record (the stored one, else the earliest received) is kept, the other is quarantined as
`conflicting_duplicate`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

CONTENT_TIMES = {"charge_start_time": "ChargeStartTime", "charge_end_time": "ChargeEndTime"}
CONTENT_NUMBERS = {"charge_w": "ChargeW", "charge_duration": "ChargeDuration", "charge_energy_wh": "ChargeEnergy"}
RELATIVE_TOLERANCE = 1e-6

ISO_MICROS = "%Y-%m-%dT%H:%M:%S%.6fZ"

# The channel a landing file came by, from its name (`channel_of`): the stream receiver writes
# `stream-*`, the batch-export client `export-*`; anything else was put in the folder (the
# simulator, a person). Of two records of one message received at the same time in one batch, the one kept as the first
# arrival: the stream (near real time) before the folder before the export (a re-delivery).
_CHANNEL_RANK = {"stream": 0, "folder": 1, "export": 2}


def channel_of(file_name: str = "file_name") -> pl.Expr:
    """`stream`, `export` or `folder`, from the landing file's name."""
    name = pl.col(file_name)
    return (
        pl.when(name.str.starts_with("stream-"))
        .then(pl.lit("stream"))
        .when(name.str.starts_with("export-"))
        .then(pl.lit("export"))
        .otherwise(pl.lit("folder"))
    )


def message_id() -> pl.Expr:
    """meter|type|time: deterministic, readable, and the same on every replay.

    The time is compared at millisecond precision (truncated), since Avro carries epoch
    milliseconds: a message that arrives by the JSON stream (".4105Z") and again by Avro or an
    export (".410Z") is one message, whatever channel brought it. The text keeps six fractional
    digits, so ids of millisecond (and centisecond) times are what they always were.
    """
    return pl.concat_str(
        [pl.col("meter_id"), pl.col("message_type"), pl.col("message_time").dt.truncate("1ms").dt.strftime(ISO_MICROS)],
        separator="|",
    ).alias("message_id")


# Ids begin with "meter|" and identifiers have no '|', so a meter's ids sort together, apart from
# any other meter's (M1|... and M10|... do not interleave). After that prefix an id holds digits,
# '-', ':', '.', 'T', 'Z', '|' and the words start and end: all sort before '~', so
# [prefix, prefix + ID_END] holds every id under the prefix. The tables that read these ranges
# keep the ids in code-point order (Warehouse.read_id_ranges).
ID_END = "~"
MESSAGE_TYPES = ("start", "end")


def id_time(ts: datetime) -> str:
    """A time as the ids write it (ISO_MICROS, UTC), to bound a range of ids."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_id_prefix(meter_id: str, message_type: str) -> str:
    """`meter|type|`: what the ids of one meter's messages of one type begin with (by time after it)."""
    return f"{meter_id}|{message_type}|"


def message_id_prefixes(meter_ids: list[str]) -> list[str]:
    return [message_id_prefix(meter, kind) for meter in meter_ids for kind in MESSAGE_TYPES]


def message_id_range(meter_ids: list[str], time_from: datetime, time_to: datetime) -> tuple[list[str], str, str]:
    """(prefixes, low, high) of the message ids of `meter_ids` whose time may lie in [time_from,
    time_to] (Warehouse.read_id_ranges): ids keep the millisecond, so the low end is time_from
    truncated to it; the range may hold a message a few microseconds early, never miss one."""
    floor = time_from.replace(microsecond=time_from.microsecond // 1000 * 1000)
    return message_id_prefixes(meter_ids), id_time(floor), id_time(time_to)


def meter_id_prefixes(meter_ids: list[str]) -> list[str]:
    """`meter|`: what every id of a meter begins with, messages and sessions alike."""
    return [f"{meter}|" for meter in meter_ids]


def meter_prefixes(meter_ids: list[str]) -> tuple[list[str], str, str]:
    """(prefixes, low, high) of every id of `meter_ids`, messages or sessions alike."""
    return meter_id_prefixes(meter_ids), "", ID_END


def local_date(column: str, tz: str) -> pl.Expr:
    return pl.col(column).dt.convert_time_zone(tz).dt.date()


def to_events(accepted: pl.DataFrame, *, batch_id: str, tz: str, ingested_at: datetime) -> pl.DataFrame:
    """Typed accepted messages as event rows (before enrichment)."""
    return accepted.select(
        message_id(),
        "message_type",
        "meter_id",
        "meter_number",
        "esn",
        pl.col("service_point_id").alias("reported_service_point_id"),
        pl.col("premise_id").alias("reported_premise_id"),
        pl.col("transformer_id").alias("reported_transformer_id"),
        "message_time",
        local_date("message_time", tz).alias("message_date"),
        "received_time",
        "charge_start_time",
        "charge_end_time",
        "charge_w",
        "charge_duration",
        "charge_energy_wh",
        "extra_fields",
        pl.lit(batch_id).alias("batch_id"),
        "file_name",
        channel_of("file_name").alias("first_channel"),
        "file_sha256",
        "record_index",
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
    )


def split_duplicates(events: pl.DataFrame, known: pl.DataFrame) -> tuple[pl.DataFrame, int, pl.DataFrame]:
    """(new events, duplicates, conflicts) of a batch's event rows against the stored events with
    the same message ids (`known`: message_id, batch_id and the content columns).

    Per identity, the reference is the stored event, else the earliest received record of the
    batch (which is new; at the same received time, the stream's before the folder's before the
    export's, so `first_channel` names the channel of first arrival). A stored event is never
    changed: a later delivery by another channel leaves its first_channel as it is.

    Every other record is a duplicate when its content equals the reference's, a conflict
    otherwise. Conflicts come back as rejected rows (file_name, file_sha256, record_index,
    meter_id, reason_codes, reasons), naming the fields that differ."""
    content = [*CONTENT_TIMES, *CONTENT_NUMBERS]
    rank = channel_of("file_name").replace_strict(_CHANNEL_RANK, default=1, return_dtype=pl.Int8)
    ordered = events.sort(pl.col("received_time"), rank, pl.col("file_name"), pl.col("record_index")).with_columns(
        (pl.int_range(pl.len()).over("message_id") == 0).alias("_first"),
        pl.col("message_id").is_in(known["message_id"].implode()).alias("_known"),
    )
    new = ordered.filter(pl.col("_first") & ~pl.col("_known")).drop("_first", "_known")
    reference = pl.concat(
        [
            known.select("message_id", "batch_id", *content),
            new.select("message_id", "batch_id", *content),
        ],
        how="vertical_relaxed",
    ).rename({c: f"{c}_ref" for c in ["batch_id", *content]})
    others = ordered.filter(~(pl.col("_first") & ~pl.col("_known"))).join(reference, on="message_id", how="left")
    differs = {c: _differs(c).alias(f"_differs_{c}") for c in content}
    others = others.with_columns(*differs.values()).with_columns(
        pl.any_horizontal(*[pl.col(f"_differs_{c}") for c in content]).alias("_conflict")
    )
    conflicts = others.filter(pl.col("_conflict"))
    duplicates = others.height - conflicts.height
    return new, duplicates, _conflict_rows(conflicts, content)


def _differs(column: str) -> pl.Expr:
    a, b = pl.col(column), pl.col(f"{column}_ref")
    if column in CONTENT_TIMES:
        same = a.dt.truncate("1ms") == b.dt.truncate("1ms")
    else:
        same = (a - b).abs() <= RELATIVE_TOLERANCE * pl.max_horizontal(a.abs(), b.abs())
    return (a.is_null() != b.is_null()) | ~same.fill_null(True)


def _conflict_rows(conflicts: pl.DataFrame, content: list[str]) -> pl.DataFrame:
    from ev_assets.core.contract import REJECTION_CODES

    names = {**CONTENT_TIMES, **CONTENT_NUMBERS}
    rows = []
    for row in conflicts.iter_rows(named=True):
        reasons = []
        for c in content:
            if row[f"_differs_{c}"]:
                reasons.append(
                    {
                        "code": "conflicting_duplicate",
                        "field": names[c],
                        "message": (
                            f"{REJECTION_CODES['conflicting_duplicate']} {names[c]} {_show(row[c])} differs from "
                            f"{_show(row[f'{c}_ref'])} in the accepted message {row['message_id']} (batch "
                            f"{row['batch_id_ref']})."
                        ),
                    }
                )
        rows.append(
            {
                "file_name": row["file_name"],
                "file_sha256": row["file_sha256"],
                "record_index": row["record_index"],
                "meter_id": row["meter_id"],
                "reason_codes": "conflicting_duplicate",
                "reasons": json.dumps(reasons, ensure_ascii=False),
            }
        )
    schema = {
        "file_name": pl.String,
        "file_sha256": pl.String,
        "record_index": pl.Int64,
        "meter_id": pl.String,
        "reason_codes": pl.String,
        "reasons": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def _show(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, datetime):
        return value.strftime(ISO_MICROS)
    return f"{value:g}"
