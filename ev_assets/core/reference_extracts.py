"""The utility's reference extracts (CIS, MDMS, GIS) as the pipeline reads them: one CSV per table.

The hierarchy is substation -> feeder -> distribution transformer -> service point -> meter. Every
table carries a validity interval ``[effective_from, effective_to)``; an empty ``effective_to`` means
"still in effect". The feed's ServicePointID, TransformerID and PremiseID are "as of the event
date" (spec), so joins to these tables are point-in-time (see `ev_assets.core.enrich`).

Pure: files in, frames out. The README ("Reference data") documents every column.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

TABLES = ("substations", "feeders", "transformers", "premises", "service_points", "meters")

_VALIDITY = {"effective_from": pl.Date, "effective_to": pl.Date}

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "substations": {"substation_id": pl.String, "substation_name": pl.String, **_VALIDITY},
    "feeders": {
        "feeder_id": pl.String,
        "substation_id": pl.String,
        "voltage_kv": pl.Float64,
        **_VALIDITY,
    },
    "transformers": {
        "transformer_id": pl.String,
        "feeder_id": pl.String,
        "kva_rating": pl.Float64,
        "phase": pl.String,
        **_VALIDITY,
    },
    "premises": {
        "premise_id": pl.String,
        "premise_type": pl.String,
        "city": pl.String,
        "latitude": pl.Float64,
        "longitude": pl.Float64,
        **_VALIDITY,
    },
    "service_points": {
        "service_point_id": pl.String,
        "premise_id": pl.String,
        "transformer_id": pl.String,
        **_VALIDITY,
    },
    "meters": {
        "meter_id": pl.String,
        "meter_key": pl.Int64,
        "meter_number": pl.String,
        "esn": pl.String,
        "service_point_id": pl.String,
        **_VALIDITY,
    },
}

# Group sizes of the hierarchy (inclusive ranges).


def write_reference_extracts(frames: dict[str, pl.DataFrame], directory: Path) -> None:
    """Write one CSV per table (``<stem>.csv``) into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        frames[name].write_csv(directory / f"{name}.csv", date_format="%Y-%m-%d")


def read_reference_extracts(directory: Path) -> dict[str, pl.DataFrame]:
    """Read the six CSVs back with the exact dtypes of :data:`SCHEMAS`.

    Identifiers are read as strings so that leading zeros survive.
    """
    directory = Path(directory)
    return {
        name: pl.read_csv(directory / f"{name}.csv", schema=SCHEMAS[name], try_parse_dates=False)
        for name in TABLES
    }


def valid_on(on: pl.Expr) -> pl.Expr:
    """Filter expression: the row is in effect on the date ``on`` (``[from, to)``)."""
    return (pl.col("effective_from") <= on) & (
        pl.col("effective_to").is_null() | (pl.col("effective_to") > on)
    )
