"""The spec's event record, as frame expressions: its field names, numbers as strings, the other
message type's fields null. One declaration for the events API's pages and stream and the live
service's events (`ev_assets.live.messages`), computed per column, not per row: a page of thousands
of events costs milliseconds to shape, not a Python call per field."""

from __future__ import annotations

import polars as pl

# ISO 8601 UTC with milliseconds (truncated) and a Z, as the spec's example writes times.
SPEC_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"


def spec_time(column: str) -> pl.Expr:
    """A time in UTC as the spec writes it; naive values are UTC already, an all-null column is null."""
    return pl.col(column).cast(pl.Datetime("us", "UTC")).dt.strftime(SPEC_TIME_FORMAT)


def spec_number(column: str) -> pl.Expr:
    """A number as the spec's string: a whole value without a decimal part ("7200"), any other as
    its shortest round-trip decimal ("1.5833333333333333"; below 1e-4 in exponent form, "1e-7")."""
    value = pl.col(column).cast(pl.Float64)
    whole = value.cast(pl.Int64, strict=False).cast(pl.String)
    return (
        pl.when(value == value.round(0))
        .then(pl.coalesce(whole, value.cast(pl.String)))
        .otherwise(value.cast(pl.String))
    )


# Spec field -> the expression over ev_charging_events' columns, in the spec's order.
SPEC_FIELDS: dict[str, pl.Expr] = {
    "ServicePointID": pl.col("service_point_id"),
    "MeterID": pl.col("meter_id"),
    "MeterNumber": pl.col("meter_number"),
    "ESN": pl.col("esn"),
    "TransformerID": pl.col("transformer_id"),
    "PremiseID": pl.col("premise_id"),
    "ReceivedTime": spec_time("received_time"),
    "ChargeStartTime": spec_time("charge_start_time"),
    "ChargeEndTime": spec_time("charge_end_time"),
    "ChargeW": spec_number("charge_w"),
    "ChargeDuration": spec_number("charge_duration"),
    "ChargeEnergy": spec_number("charge_energy_wh"),
}
# The ev_charging_events columns the spec's record reads.
SPEC_SOURCE_COLUMNS = tuple(dict.fromkeys(c for expr in SPEC_FIELDS.values() for c in expr.meta.root_names()))


def spec_records(events: pl.DataFrame) -> pl.DataFrame:
    """Events (ev_charging_events' columns) in the spec's shape, one column per spec field, all strings."""
    return events.select(**{name: expr.cast(pl.String) for name, expr in SPEC_FIELDS.items()})


def json_objects(frame: pl.DataFrame) -> str:
    """The rows as JSON objects joined by commas (the inside of a JSON array). A JSON document never
    holds a raw newline (strings escape it), so NDJSON's line breaks are exactly the separators."""
    return frame.write_ndjson().rstrip("\n").replace("\n", ",") if frame.height else ""
