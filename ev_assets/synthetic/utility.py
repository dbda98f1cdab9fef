"""Deterministic synthetic utility: the reference data (CIS, MDMS, GIS) that the
EV Awareness feed's identifiers point at.

The hierarchy is substation -> feeder -> distribution transformer -> service point
(one per home, with its premise) -> meter. Every table carries a validity interval
``[effective_from, effective_to)``; ``effective_to`` empty/null means "still in effect".
The feed's ServicePointID, TransformerID and PremiseID are "as of the event date"
(DOMAIN.md, "Meaning that the spec fixes"), so the data deliberately changes over time:

* about 1 % of meters are exchanged: the old meter row closes on the exchange date and a
  new meter (new meter_id, meter_key, meter_number and esn) opens at the same service point;
* about 1 % of service points are re-fed from another transformer on the same feeder
  (a GIS correction): the old service_point row closes, a new row with the same
  service_point_id and the new transformer_id opens.

Both change dates fall in ``[start + 30 d, start + 360 d]``; every other row is in effect
from ``start`` on. The same ``meters``/``seed``/``start`` give byte-identical CSV files.

CSV files (one per table, named after the dict key; dates ISO ``YYYY-MM-DD``; an empty
field is null)::

    substations.csv     substation_id ("SUB-001"), substation_name,
                        effective_from, effective_to
    feeders.csv         feeder_id ("FDR-001-01"), substation_id, voltage_kv (float),
                        effective_from, effective_to
    transformers.csv    transformer_id ("4000000123-00000045", the spec's
                        "xxxxxxxxxx-xxxxxxxx"), feeder_id, kva_rating (float),
                        phase ("A"/"B"/"C"), effective_from, effective_to
    premises.csv        premise_id ("P" + 10 digits), premise_type ("residential",
                        "multifamily", "commercial"), city, latitude, longitude,
                        effective_from, effective_to
    service_points.csv  service_point_id (10 digits), premise_id, transformer_id,
                        effective_from, effective_to
    meters.csv          meter_id (10 digits), meter_key (int surrogate key 1..n, one per
                        row), meter_number (10 digits), esn (the spec's
                        "x.xx.xxx.x.xxxxxx.xx.xx.xxxxxxxxxx"), service_point_id,
                        effective_from, effective_to

Scale: one premise, service point and meter per home; 4-10 service points per
transformer (DOMAIN.md: a residential transformer serves about 4-10 homes), 20-40
transformers per feeder and 8-12 feeders per substation. Everything is vectorised, so
200,000 meters generate in a few seconds.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from ev_assets.core.reference_extracts import SCHEMAS, TABLES, valid_on  # noqa: F401

SERVICE_POINTS_PER_TRANSFORMER = (4, 10)  # DOMAIN.md: "serving about 4-10 homes"
TRANSFORMERS_PER_FEEDER = (20, 40)  # "dozens of transformers per feeder"
FEEDERS_PER_SUBSTATION = (8, 12)

METER_EXCHANGE_SHARE = 0.01
REFEED_SHARE = 0.01
CHANGE_DAY_RANGE = (30, 360)  # days after start, inclusive

CITIES = (
    "Riverton",
    "Oakdale",
    "Fairview",
    "Maple Grove",
    "Cedar Falls",
    "Brookside",
    "Lakeview",
    "Hillcrest",
    "Westfield",
    "Springdale",
)
# A made-up service territory in the Eastern time zone (the simulator's default).
TERRITORY_LAT = (35.0, 36.5)
TERRITORY_LON = (-80.5, -78.0)
FEEDER_VOLTAGES_KV = np.array([12.47, 12.47, 12.47, 13.2, 24.94])
PREMISE_TYPES = np.array(["residential", "multifamily", "commercial"])
PREMISE_TYPE_WEIGHTS = np.array([0.88, 0.08, 0.04])
# DOMAIN.md: residential units of 25, 37.5 or 50 kVA; standard ratings 75, 100, 167 for a few.
LARGE_KVA_RATINGS = np.array([75.0, 100.0, 167.0])
LARGE_KVA_SHARE = 0.05


# --------------------------------------------------------------------------- public API


def generate_utility(meters: int = 2000, seed: int = 7, start: date = date(2024, 1, 1)) -> dict[str, pl.DataFrame]:
    """Generate the six reference tables for ``meters`` homes, keyed by file stem."""
    if meters < 1:
        raise ValueError("meters must be >= 1")
    rng = np.random.default_rng(seed)

    # Hierarchy, bottom up: each level's members are contiguous runs of the level below.
    sp_transformer = _assign_to_groups(rng, meters, SERVICE_POINTS_PER_TRANSFORMER)
    n_transformers = int(sp_transformer[-1]) + 1
    transformer_feeder = _assign_to_groups(rng, n_transformers, TRANSFORMERS_PER_FEEDER)
    n_feeders = int(transformer_feeder[-1]) + 1
    feeder_substation = _assign_to_groups(rng, n_feeders, FEEDERS_PER_SUBSTATION)
    n_substations = int(feeder_substation[-1]) + 1

    substations = _substations(n_substations)
    feeders = _feeders(rng, feeder_substation, substations)
    transformers = _transformers(rng, transformer_feeder, sp_transformer, feeders)
    premises = _premises(rng, sp_transformer, transformer_feeder, feeder_substation)
    service_points = _service_points(rng, sp_transformer, transformer_feeder, transformers, premises, start)
    meters_frame = _meters(rng, service_points, start)

    frames = {
        "substations": _with_validity(substations, start),
        "feeders": _with_validity(feeders, start),
        "transformers": _with_validity(transformers, start),
        "premises": _with_validity(premises, start),
        "service_points": service_points,
        "meters": meters_frame,
    }
    # Optional columns the synthetic utility does not model (per-transformer thermal overrides) are null.
    return {
        name: frames[name]
        .with_columns(
            [pl.lit(None, dtype=t).alias(c) for c, t in SCHEMAS[name].items() if c not in frames[name].columns]
        )
        .select(list(SCHEMAS[name]))
        .cast(SCHEMAS[name])
        for name in TABLES
    }


# --------------------------------------------------------------------------- hierarchy


def _assign_to_groups(rng: np.random.Generator, n: int, size_range: tuple[int, int]) -> np.ndarray:
    """Split ``n`` consecutive members into groups with sizes in ``size_range``.

    Returns the group index of each member (non-decreasing, starting at 0). If the last
    group would come out too small it borrows one member from each of a few earlier groups
    that can spare one, so every group keeps the minimum size when ``n`` allows it.
    """
    low, high = size_range
    sizes = rng.integers(low, high + 1, size=n // low + 1)
    ends = np.cumsum(sizes)
    n_groups = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:n_groups].copy()
    sizes[-1] = n - (ends[n_groups - 2] if n_groups > 1 else 0)
    shortfall = low - sizes[-1]
    donors = np.flatnonzero(sizes[:-1] > low)[::-1][: max(shortfall, 0)]
    if shortfall > 0 and len(donors) == shortfall:
        sizes[donors] -= 1
        sizes[-1] += shortfall
    return np.repeat(np.arange(n_groups), sizes)


def _first_member_of_groups(groups: np.ndarray) -> np.ndarray:
    """Index of the first member of each group, for contiguous group assignments."""
    return np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])


def _increasing_ids(rng: np.random.Generator, count: int, base: int, max_step: int = 40) -> np.ndarray:
    """Unique, increasing, irregularly spaced integer ids (how utility numbering looks)."""
    return base + np.cumsum(rng.integers(1, max_step + 1, size=count))


def _digits(values: np.ndarray, width: int) -> pl.Series:
    return pl.Series(values.astype(np.int64)).cast(pl.String).str.zfill(width)


def _substations(n_substations: int) -> pl.DataFrame:
    index = np.arange(n_substations)
    cities = np.array(CITIES)[index % len(CITIES)]
    occurrence = index // len(CITIES) + 1
    return pl.DataFrame(
        {
            "substation_id": "SUB-" + _digits(index + 1, 3),
            "substation_name": pl.Series(cities) + " " + pl.Series(occurrence).cast(pl.String),
        }
    )


def _feeders(rng: np.random.Generator, feeder_substation: np.ndarray, substations: pl.DataFrame) -> pl.DataFrame:
    first = _first_member_of_groups(feeder_substation)
    number_in_substation = np.arange(len(feeder_substation)) - first[feeder_substation] + 1
    substation_voltage = rng.choice(FEEDER_VOLTAGES_KV, size=substations.height)
    substation_ids = substations["substation_id"].gather(feeder_substation)
    return pl.DataFrame(
        {
            "feeder_id": "FDR-" + _digits(feeder_substation + 1, 3) + "-" + _digits(number_in_substation, 2),
            "substation_id": substation_ids,
            "voltage_kv": substation_voltage[feeder_substation],
        }
    )


def _transformers(
    rng: np.random.Generator,
    transformer_feeder: np.ndarray,
    sp_transformer: np.ndarray,
    feeders: pl.DataFrame,
) -> pl.DataFrame:
    n = len(transformer_feeder)
    homes = np.bincount(sp_transformer, minlength=n)
    # Rating sized to the homes served; a few larger units (spares, future load, commercial).
    kva = np.select([homes <= 5, homes <= 7], [25.0, 37.5], default=50.0)
    upsized = rng.random(n) < LARGE_KVA_SHARE
    kva = np.where(upsized, rng.choice(LARGE_KVA_RATINGS, size=n, p=[0.6, 0.3, 0.1]), kva)
    structure = _increasing_ids(rng, n, base=4_000_000_000)
    unit = rng.integers(0, 100_000_000, size=n)
    return pl.DataFrame(
        {
            "transformer_id": _digits(structure, 10) + "-" + _digits(unit, 8),
            "feeder_id": feeders["feeder_id"].gather(transformer_feeder),
            "kva_rating": kva,
            "phase": np.array(["A", "B", "C"])[rng.integers(0, 3, size=n)],
        }
    )


def _premises(
    rng: np.random.Generator,
    sp_transformer: np.ndarray,
    transformer_feeder: np.ndarray,
    feeder_substation: np.ndarray,
) -> pl.DataFrame:
    n = len(sp_transformer)
    sp_substation = feeder_substation[transformer_feeder[sp_transformer]]
    n_substations = int(feeder_substation[-1]) + 1
    # Homes cluster around their transformer, transformers around their substation.
    substation_lat = rng.uniform(*TERRITORY_LAT, size=n_substations)
    substation_lon = rng.uniform(*TERRITORY_LON, size=n_substations)
    transformer_lat = substation_lat[feeder_substation[transformer_feeder]] + rng.normal(
        0, 0.02, len(transformer_feeder)
    )
    transformer_lon = substation_lon[feeder_substation[transformer_feeder]] + rng.normal(
        0, 0.02, len(transformer_feeder)
    )
    latitude = transformer_lat[sp_transformer] + rng.normal(0, 0.0004, n)
    longitude = transformer_lon[sp_transformer] + rng.normal(0, 0.0004, n)
    premise_numbers = _increasing_ids(rng, n, base=1_000_000_000)
    return pl.DataFrame(
        {
            "premise_id": "P" + _digits(premise_numbers, 10),
            "premise_type": rng.choice(PREMISE_TYPES, size=n, p=PREMISE_TYPE_WEIGHTS),
            "city": np.array(CITIES)[sp_substation % len(CITIES)],
            "latitude": np.round(latitude, 6),
            "longitude": np.round(longitude, 6),
        }
    )


# --------------------------------------------------------------------------- changes over time


def _change_dates(rng: np.random.Generator, count: int, start: date) -> pl.Series:
    offsets = rng.integers(CHANGE_DAY_RANGE[0], CHANGE_DAY_RANGE[1] + 1, size=count)
    start_day = (start - date(1970, 1, 1)).days
    return pl.Series(start_day + offsets, dtype=pl.Int32).cast(pl.Date)


def _pick(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Sorted indices of a random ``share`` of ``n`` members (at least one when n > 0)."""
    count = min(n, max(1, round(n * share)))
    return np.sort(rng.choice(n, size=count, replace=False))


def _service_points(
    rng: np.random.Generator,
    sp_transformer: np.ndarray,
    transformer_feeder: np.ndarray,
    transformers: pl.DataFrame,
    premises: pl.DataFrame,
    start: date,
) -> pl.DataFrame:
    n = len(sp_transformer)
    ids = _digits(_increasing_ids(rng, n, base=5_000_000_000), 10)
    transformer_ids = transformers["transformer_id"]
    current = pl.DataFrame(
        {
            "service_point_id": ids,
            "premise_id": premises["premise_id"],
            "transformer_id": transformer_ids.gather(sp_transformer),
        }
    )
    # GIS corrections: re-feed from another transformer on the same feeder.
    feeder_first = _first_member_of_groups(transformer_feeder)
    feeder_size = np.bincount(transformer_feeder)
    refed = _pick(rng, n, REFEED_SHARE)
    old = sp_transformer[refed]
    feeder = transformer_feeder[old]
    refed_ok = feeder_size[feeder] > 1  # a lone transformer on a feeder cannot be swapped
    refed, old, feeder = refed[refed_ok], old[refed_ok], feeder[refed_ok]
    shift = rng.integers(1, np.maximum(feeder_size[feeder], 2))
    new = feeder_first[feeder] + (old - feeder_first[feeder] + shift) % feeder_size[feeder]
    change = _change_dates(rng, len(refed), start)
    return _close_and_reopen(current, refed, change, {"transformer_id": transformer_ids.gather(new)}, start)


def _meters(rng: np.random.Generator, service_points: pl.DataFrame, start: date) -> pl.DataFrame:
    sp_ids = service_points["service_point_id"].unique(maintain_order=True)
    n = len(sp_ids)
    exchanged = _pick(rng, n, METER_EXCHANGE_SHARE)
    total = n + len(exchanged)  # new meters get the next ids and keys
    identity = pl.DataFrame(
        {
            "meter_id": _digits(_increasing_ids(rng, total, base=2_000_000_000), 10),
            "meter_key": np.arange(1, total + 1),
            "meter_number": _digits(_increasing_ids(rng, total, base=9_100_000_000, max_step=3), 10),
        }
    )
    identity = identity.with_columns(esn=_esns(rng, identity["meter_number"]))
    original = identity.head(n).with_columns(service_point_id=sp_ids)
    change = _change_dates(rng, len(exchanged), start)
    replacement = {name: identity[name].slice(n) for name in ("meter_id", "meter_key", "meter_number", "esn")}
    meters = _close_and_reopen(original, exchanged, change, replacement, start)
    return meters.sort("meter_key")


def _esns(rng: np.random.Generator, meter_numbers: pl.Series) -> pl.Series:
    """ESNs in the spec's ``x.xx.xxx.x.xxxxxx.xx.xx.xxxxxxxxxx`` shape.

    A fixed vendor/model prefix, a per-meter lot, firmware/hardware codes and the meter
    number as the trailing serial, so each ESN is unique.
    """
    n = len(meter_numbers)
    model = rng.choice(np.array(["1.16.210.3", "1.16.210.4", "1.18.240.3"]), size=n, p=[0.5, 0.3, 0.2])
    lot = _digits(rng.integers(0, 1_000_000, size=n), 6)
    hardware = _digits(rng.integers(10, 40, size=n), 2)
    firmware = _digits(rng.integers(0, 100, size=n), 2)
    return pl.Series(model) + "." + lot + "." + hardware + "." + firmware + "." + meter_numbers


def _close_and_reopen(
    current: pl.DataFrame,
    changed_rows: np.ndarray,
    change_dates: pl.Series,
    new_values: dict[str, pl.Series],
    start: date,
) -> pl.DataFrame:
    """Give ``current`` validity columns, closing ``changed_rows`` on ``change_dates``
    and appending their successors (same other columns, ``new_values`` replaced)."""
    row = pl.Series("row", np.arange(current.height))
    closes = pl.DataFrame({"row": changed_rows, "effective_to": change_dates})
    current = current.with_columns(row, effective_from=pl.lit(start, dtype=pl.Date)).join(closes, on="row", how="left")
    successors = (
        current.filter(pl.col("row").is_in(changed_rows.tolist()))
        .sort("row")
        .with_columns(
            *[values.alias(name) for name, values in new_values.items()],
            effective_from=pl.col("effective_to"),
            effective_to=pl.lit(None, dtype=pl.Date),
        )
    )
    # Successor rows go right after their predecessor (stable, readable files).
    return (
        pl.concat([current.with_columns(version=0), successors.with_columns(version=1)])
        .sort("row", "version")
        .drop("row", "version")
    )


def _with_validity(frame: pl.DataFrame, start: date) -> pl.DataFrame:
    return frame.with_columns(effective_from=pl.lit(start, dtype=pl.Date), effective_to=pl.lit(None, dtype=pl.Date))


__all__ = ["generate_utility"]
