"""Event stage: accepted contract output -> rows of the event table, and duplicate detection.

Pure polars. A message's identity is (meter, message type, the time it reports, to the millisecond): the same start
or end sent twice, in one batch or across batches, is one event (the issue's duplicate rule).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

ISO_MICROS = "%Y-%m-%dT%H:%M:%S%.6fZ"


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
        "record_index",
        pl.lit(ingested_at).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
    )


def split_duplicates(events: pl.DataFrame, known_ids: pl.Series) -> tuple[pl.DataFrame, int]:
    """New events, and how many were duplicates: of each other (the earliest received wins) or of
    events already stored (`known_ids`)."""
    first = events.sort("received_time", "file_name", "record_index").unique(
        "message_id", keep="first", maintain_order=True
    )
    new = first.filter(~pl.col("message_id").is_in(known_ids.implode()))
    return new, events.height - new.height
