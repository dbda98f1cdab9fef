"""The utility's reference extracts (CIS, MDMS, GIS) as the pipeline reads them: CSV files in one
folder (``EV_REFERENCE_DIR``), in one of two forms.

Pure: files in, frames out (the six tables of :data:`TABLES`, with the dtypes of :data:`SCHEMAS`).
The feed's ServicePointID, TransformerID and PremiseID are "as of the event date" (spec), so joins
to these tables are point-in-time (see `ev_assets.core.enrich`).

General rules (both forms)
--------------------------
- UTF-8 CSV with a header row; columns are found by name (their order does not matter; columns
  not listed below are ignored). A blank field is null.
- Identifiers are read as text, so leading zeros survive.
- Dates are ``YYYY-MM-DD``. Every row is valid over ``[effective_from, effective_to)``: from its
  ``effective_from`` included to its ``effective_to`` excluded. A blank ``effective_to`` means
  "still in effect". A blank (or absent) ``effective_from`` means 1900-01-01
  (:data:`DEFAULT_EFFECTIVE_FROM`): in effect for any history a utility may import. A correction
  (a meter found on another transformer since a date) is two rows: the old one closed with
  ``effective_to`` = that date, the new one opened with ``effective_from`` = that date. Events are
  matched to the row in effect on their local event date.
- An extract that lacks a file or a required column is refused with a ``ValueError`` naming the
  file and the missing columns.

1. Minimal extract: ``meters.csv`` alone
---------------------------------------
The folder holds only ``meters.csv`` and it has a ``transformer_id`` column: one row per meter
(per validity interval), mapping the meter to its transformer.

==================  ========  =====================================================================
column              required  meaning
==================  ========  =====================================================================
meter_id            yes       the feed's MeterID
transformer_id      yes       the feed's TransformerID: the transformer feeding the meter
feeder_id           no        feeder of the transformer (see "unknown" below)
substation_id       no        substation the feeder leaves from (see "unknown" below)
kva_rating          no        transformer nameplate rating, kVA (blank: no utilization computed)
service_point_id    no        the feed's ServicePointID; blank: the meter_id
premise_id          no        the feed's PremiseID; blank: the service_point_id
meter_number        no        the feed's MeterNumber
esn                 no        the feed's ESN
meter_key           no        the utility's integer surrogate key; blank: generated (below)
effective_from      no        first day the row is in effect; blank: 1900-01-01
effective_to        no        first day the row is no longer in effect; blank: still in effect
==================  ========  =====================================================================

The six tables are derived from it:

- ``meters``: meter_id, meter_key, meter_number, esn, service_point_id and the row's dates.
- ``service_points``: one row per distinct (service_point_id, premise_id, transformer_id,
  effective_from, effective_to) of the meter rows; so a meter moved to another transformer
  since a date moves its service point with it.
- ``premises``, ``transformers``, ``feeders``, ``substations``: one row per distinct id, valid
  from 1900-01-01 with no end (the grid topology of a minimal extract has no history; a
  transformer's feeder and rating, and a feeder's substation, must be the same on every row that
  names them, else a ``ValueError`` names the ids in conflict). Columns a minimal extract does
  not carry (substation_name, voltage_kv, phase, premise_type, city, latitude, longitude) are null.
- **Unknown feeder or substation.** The warehouse requires every transformer to have a feeder and
  every feeder a substation, and the feeder and substation daily loads are sums over them. A
  transformer with no ``feeder_id`` is put on the placeholder feeder ``unknown:<substation_id>``
  when its substation is given, else ``unknown``; a feeder with no ``substation_id`` on the
  placeholder substation ``unknown``. So every join keeps working, transformer load is complete,
  a substation's load is still right when only the feeder is missing, and the ``unknown...``
  rows of ``feeder_daily_load`` and ``substation_daily_load`` hold the load of the transformers
  the extract did not place (read them as "not mapped", not as one real feeder).

2. Full extract: six files
--------------------------
``substations.csv``, ``feeders.csv``, ``transformers.csv``, ``premises.csv``,
``service_points.csv`` and ``meters.csv`` (without a ``transformer_id`` column), one per table.
The hierarchy is substation -> feeder -> distribution transformer -> service point -> meter, and a
meter reaches its transformer through its service point (as of the event date). Required columns
are marked *; every file also takes ``effective_from`` and ``effective_to`` as above.

- substations.csv: substation_id*, substation_name
- feeders.csv: feeder_id*, substation_id*, voltage_kv (kV)
- transformers.csv: transformer_id*, feeder_id*, kva_rating (kVA), phase, base_load_scale and
  ambient_c (°C): this transformer's overrides of EV_BASE_LOAD_SCALE and EV_AMBIENT_C in its
  aging (blank: the settings)
- premises.csv: premise_id*, premise_type (residential, multifamily, commercial), city,
  latitude, longitude (degrees)
- service_points.csv: service_point_id*, premise_id*, transformer_id*
- meters.csv: meter_id*, service_point_id*, meter_key (blank or absent: generated), meter_number, esn

Generated ``meter_key``
-----------------------
``meter_key`` is the surrogate key the event table stores for the meter row in effect. When the
utility has none (column absent or blank), it is a 63-bit hash (BLAKE2b) of meter_id and
effective_from (:func:`generated_meter_key`): the same extract gives the same keys on every
reload, adding or removing meters renumbers no other meter, and each validity row of a meter has
its own key. Keys must be unique (a ``ValueError`` says which are not).
"""

from __future__ import annotations

import hashlib
from datetime import date
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
        "base_load_scale": pl.Float64,
        "ambient_c": pl.Float64,
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

# Columns a full extract's file must have (the others may be absent: null, or defaulted).
REQUIRED: dict[str, tuple[str, ...]] = {
    "substations": ("substation_id",),
    "feeders": ("feeder_id", "substation_id"),
    "transformers": ("transformer_id", "feeder_id"),
    "premises": ("premise_id",),
    "service_points": ("service_point_id", "premise_id", "transformer_id"),
    "meters": ("meter_id", "service_point_id"),
}

MINIMAL_SCHEMA: dict[str, pl.DataType] = {
    "meter_id": pl.String,
    "transformer_id": pl.String,
    "feeder_id": pl.String,
    "substation_id": pl.String,
    "kva_rating": pl.Float64,
    "service_point_id": pl.String,
    "premise_id": pl.String,
    "meter_number": pl.String,
    "esn": pl.String,
    "meter_key": pl.Int64,
    **_VALIDITY,
}
MINIMAL_REQUIRED = ("meter_id", "transformer_id")

DEFAULT_EFFECTIVE_FROM = date(1900, 1, 1)
UNKNOWN = "unknown"


def write_reference_extracts(frames: dict[str, pl.DataFrame], directory: Path) -> None:
    """Write one CSV per table (``<stem>.csv``) into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        frames[name].write_csv(directory / f"{name}.csv", date_format="%Y-%m-%d")


def read_reference_extracts(directory: Path) -> dict[str, pl.DataFrame]:
    """The six reference tables, with the exact dtypes of :data:`SCHEMAS`, from a full extract
    (six CSVs) or a minimal one (``meters.csv`` with ``transformer_id``): see the module docstring."""
    directory = Path(directory)
    meters_path = directory / "meters.csv"
    if not meters_path.exists():
        raise ValueError(f"reference extract {directory}: meters.csv is missing")
    if "transformer_id" in _header(meters_path):
        others = [f"{n}.csv" for n in TABLES if n != "meters" and (directory / f"{n}.csv").exists()]
        if others:
            raise ValueError(
                f"reference extract {directory}: meters.csv has a transformer_id column (a minimal "
                f"extract) but {', '.join(others)} also exist; keep either meters.csv alone or the six files"
            )
        return derive_tables(_read(meters_path, MINIMAL_SCHEMA, MINIMAL_REQUIRED))
    missing = [f"{n}.csv" for n in TABLES if not (directory / f"{n}.csv").exists()]
    if missing:
        raise ValueError(
            f"reference extract {directory}: {', '.join(missing)} missing (a full extract has six files; "
            "a minimal one is meters.csv alone, with meter_id and transformer_id)"
        )
    frames = {name: _read(directory / f"{name}.csv", SCHEMAS[name], REQUIRED[name]) for name in TABLES}
    frames["meters"] = _with_meter_keys(frames["meters"])
    return frames


def derive_tables(minimal: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The six reference tables from the rows of a minimal extract (module docstring)."""
    rows = _with_meter_keys(
        minimal.with_columns(
            pl.coalesce("service_point_id", "meter_id").alias("service_point_id"),
        ).with_columns(pl.coalesce("premise_id", "service_point_id").alias("premise_id"))
    )
    timeless = {
        "effective_from": pl.lit(DEFAULT_EFFECTIVE_FROM, dtype=pl.Date),
        "effective_to": pl.lit(None, dtype=pl.Date),
    }
    transformers = _one_value_per_id(rows, "transformer_id", ("feeder_id", "kva_rating", "substation_id"))
    unknown_feeder = (
        pl.when(pl.col("substation_id").is_not_null())
        .then(pl.concat_str([pl.lit(f"{UNKNOWN}:"), pl.col("substation_id")]))
        .otherwise(pl.lit(UNKNOWN))
    )
    transformers = transformers.with_columns(pl.coalesce(pl.col("feeder_id"), unknown_feeder).alias("feeder_id"))
    feeders = _one_value_per_id(transformers, "feeder_id", ("substation_id",)).with_columns(
        pl.col("substation_id").fill_null(UNKNOWN)
    )
    frames = {
        "substations": feeders.select(pl.col("substation_id").unique()),
        "feeders": feeders,
        "transformers": transformers,
        "premises": rows.select(pl.col("premise_id").unique()),
        "service_points": rows.select(list(SCHEMAS["service_points"])).unique(),
        "meters": rows,
    }
    out = {}
    for name in TABLES:
        frame = frames[name].with_columns(**{c: v for c, v in timeless.items() if c not in frames[name].columns})
        out[name] = _conform(frame, SCHEMAS[name]).sort(list(SCHEMAS[name])[0], "effective_from")
    _refuse_duplicates(out["service_points"], ("service_point_id", "effective_from"), "meters.csv (service points)")
    return out


def generated_meter_key(meter_id: str, effective_from: date) -> int:
    """A stable 63-bit key of a meter row: BLAKE2b of 'meter_id|YYYY-MM-DD', top bit cleared."""
    digest = hashlib.blake2b(f"{meter_id}|{effective_from.isoformat()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def _with_meter_keys(meters: pl.DataFrame) -> pl.DataFrame:
    """Blank meter_key -> generated_meter_key(meter_id, effective_from); keys must be unique."""
    if meters["meter_key"].null_count():
        generated = [
            key if key is not None else generated_meter_key(meter_id, start)
            for key, meter_id, start in meters.select("meter_key", "meter_id", "effective_from").iter_rows()
        ]
        meters = meters.with_columns(pl.Series("meter_key", generated, dtype=pl.Int64))
    _refuse_duplicates(meters, ("meter_key",), "meters.csv")
    return meters


def _header(path: Path) -> list[str]:
    return pl.read_csv(path, n_rows=0, infer_schema=False).columns


def _read(path: Path, schema: dict[str, pl.DataType], required: tuple[str, ...]) -> pl.DataFrame:
    """Columns by name as text, refused when required ones are absent, then cast to `schema`
    (absent optional columns null; blank effective_from 1900-01-01)."""
    raw = pl.read_csv(path, infer_schema=False)
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise ValueError(f"reference extract {path}: missing required column(s) {', '.join(missing)}")
    frame = _conform(raw, schema).with_columns(pl.col("effective_from").fill_null(DEFAULT_EFFECTIVE_FROM))
    blank = [c for c in required if frame[c].null_count()]
    if blank:
        raise ValueError(f"reference extract {path}: blank values in required column(s) {', '.join(blank)}")
    return frame


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    def column(name: str, dtype: pl.DataType) -> pl.Expr:
        if name not in frame.columns:
            return pl.lit(None, dtype=dtype).alias(name)
        if dtype == pl.Date and frame.schema[name] == pl.String:
            return pl.col(name).str.strip_chars().str.to_date("%Y-%m-%d").alias(name)
        return pl.col(name).cast(dtype).alias(name)

    return frame.select([column(n, d) for n, d in schema.items()])


def _one_value_per_id(rows: pl.DataFrame, key: str, attributes: tuple[str, ...]) -> pl.DataFrame:
    """One row per `key` with its (non-null) attributes; refused when an id has two values of one."""
    grouped = rows.group_by(key).agg(pl.col(a).drop_nulls().unique() for a in attributes)
    conflicts = grouped.filter(pl.any_horizontal(pl.col(a).list.len() > 1 for a in attributes))
    if not conflicts.is_empty():
        detail = "; ".join(
            f"{row[key]}: " + ", ".join(f"{a}={row[a]}" for a in attributes if len(row[a]) > 1)
            for row in conflicts.sort(key).head(10).iter_rows(named=True)
        )
        raise ValueError(f"reference extract meters.csv: {key} with conflicting values: {detail}")
    return grouped.with_columns(pl.col(a).list.first() for a in attributes)


def _refuse_duplicates(frame: pl.DataFrame, key: tuple[str, ...], what: str) -> None:
    dup = frame.filter(pl.struct(key).is_duplicated())
    if not dup.is_empty():
        shown = dup.select(key).unique().head(10).rows()
        raise ValueError(f"reference extract {what}: duplicate {', '.join(key)}: {shown}")


def valid_on(on: pl.Expr) -> pl.Expr:
    """Filter expression: the row is in effect on the date ``on`` (``[from, to)``)."""
    return (pl.col("effective_from") <= on) & (pl.col("effective_to").is_null() | (pl.col("effective_to") > on))
