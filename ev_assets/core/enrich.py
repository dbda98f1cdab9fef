"""Enrichment stage: attribute messages to meter, service point, premise, transformer, feeder and
substation as of the event date (point-in-time joins on the reference data's effective dates).

Pure polars. The spec defines ServicePointID, PremiseID and TransformerID "as of the event date":
a meter exchanged or a premise re-fed from another transformer changes the answer for later
dates only, so every join here picks the reference row in effect on that date.
"""

from __future__ import annotations

import polars as pl

ATTRIBUTION_COLUMNS = (
    "meter_key",
    "service_point_id",
    "premise_id",
    "transformer_id",
    "feeder_id",
    "substation_id",
    "enrichment_status",
)


def as_of_join(
    left: pl.DataFrame,
    right: pl.DataFrame,
    *,
    left_on: str,
    right_on: str,
    date_col: str,
    columns: dict[str, str],
) -> pl.DataFrame:
    """`left` with `columns` (right name -> new name) from the `right` row whose key matches and
    whose [effective_from, effective_to) contains left's `date_col`; nulls where none does."""
    keyed = left.with_row_index("_left_row")
    wanted = list(columns)
    matches = (
        keyed.select("_left_row", left_on, date_col)
        .drop_nulls([left_on, date_col])
        .join(
            right.select(right_on, *wanted, "effective_from", "effective_to"),
            left_on=left_on,
            right_on=right_on,
            how="inner",
        )
        .filter(
            (pl.col("effective_from") <= pl.col(date_col))
            & (pl.col("effective_to").is_null() | (pl.col(date_col) < pl.col("effective_to")))
        )
        # Overlapping validity would be a reference-data error; take the latest row, never two.
        .sort("effective_from", descending=True)
        .unique("_left_row", keep="first")
    )
    added = matches.select("_left_row", *[pl.col(src).alias(dst) for src, dst in columns.items()])
    return (
        keyed.drop([dst for dst in columns.values() if dst in keyed.columns])
        .join(added, on="_left_row", how="left")
        .sort("_left_row")
        .drop("_left_row")
    )


def attribute(
    frame: pl.DataFrame,
    reference: dict[str, pl.DataFrame],
    *,
    date_col: str,
) -> pl.DataFrame:
    """Add the attribution columns to a frame of messages with meter_id and `date_col`.

    The frame's reported_service_point_id, reported_premise_id and reported_transformer_id are the
    agent's own values; they stand in where the reference data does not know the meter yet
    (enrichment_status = meter_unknown), so nothing waits for the reference data to catch up.
    """
    out = as_of_join(
        frame,
        reference["meters"],
        left_on="meter_id",
        right_on="meter_id",
        date_col=date_col,
        columns={"meter_key": "meter_key", "service_point_id": "_ref_service_point_id"},
    )
    out = as_of_join(
        out,
        reference["service_points"],
        left_on="_ref_service_point_id",
        right_on="service_point_id",
        date_col=date_col,
        columns={"premise_id": "_ref_premise_id", "transformer_id": "_ref_transformer_id"},
    )
    known = pl.col("meter_key").is_not_null()
    out = out.with_columns(
        pl.when(known)
        .then(pl.col("_ref_service_point_id"))
        .otherwise(pl.col("reported_service_point_id"))
        .alias("service_point_id"),
        pl.when(known).then(pl.col("_ref_premise_id")).otherwise(pl.col("reported_premise_id")).alias("premise_id"),
        pl.when(known)
        .then(pl.col("_ref_transformer_id"))
        .otherwise(pl.col("reported_transformer_id"))
        .alias("transformer_id"),
        pl.when(known).then(pl.lit("enriched")).otherwise(pl.lit("meter_unknown")).alias("enrichment_status"),
    ).drop("_ref_service_point_id", "_ref_premise_id", "_ref_transformer_id")
    return add_grid_hierarchy(out, reference, date_col=date_col)


def add_grid_hierarchy(frame: pl.DataFrame, reference: dict[str, pl.DataFrame], *, date_col: str) -> pl.DataFrame:
    """feeder_id and substation_id of the frame's transformer_id as of `date_col`."""
    out = as_of_join(
        frame,
        reference["transformers"],
        left_on="transformer_id",
        right_on="transformer_id",
        date_col=date_col,
        columns={"feeder_id": "feeder_id"},
    )
    return as_of_join(
        out,
        reference["feeders"],
        left_on="feeder_id",
        right_on="feeder_id",
        date_col=date_col,
        columns={"substation_id": "substation_id"},
    )


def meters_affected_by_change(old: dict[str, pl.DataFrame], new: dict[str, pl.DataFrame]) -> list[str]:
    """The meters whose attribution (meter key, service point, premise, transformer, feeder,
    substation, on any date) can differ between two versions of the reference data.

    A correction may be dated in the past (a meter found to hang off another transformer): every
    event of these meters must be attributed again, not only the ones still waiting for their meter.
    A changed row anywhere in the chain meter -> service point -> transformer -> feeder is followed
    down to the meters under it, in either version (a meter moved away is affected too).
    """

    def links(table: str, child: str, parent: str) -> pl.DataFrame:
        return pl.concat([old[table].select(child, parent), new[table].select(child, parent)]).unique()

    def under(table: str, child: str, parent: str, parents: set) -> set:
        return set(links(table, child, parent).filter(pl.col(parent).is_in(list(parents)))[child].to_list())

    feeders = _changed_keys(old["feeders"], new["feeders"], "feeder_id")
    transformers = _changed_keys(old["transformers"], new["transformers"], "transformer_id")
    transformers |= under("transformers", "transformer_id", "feeder_id", feeders)
    points = _changed_keys(old["service_points"], new["service_points"], "service_point_id")
    points |= under("service_points", "service_point_id", "transformer_id", transformers)
    meters = _changed_keys(old["meters"], new["meters"], "meter_id")
    meters |= under("meters", "meter_id", "service_point_id", points)
    return sorted(m for m in meters if m is not None)


def _changed_keys(old: pl.DataFrame, new: pl.DataFrame, key: str) -> set:
    """Keys with a row in one version that the other does not have identically."""
    columns = [c for c in new.columns if c in old.columns]
    a, b = old.select(columns), new.select(columns)
    differing = pl.concat(
        [a.join(b, on=columns, how="anti", nulls_equal=True), b.join(a, on=columns, how="anti", nulls_equal=True)]
    )
    return set(differing[key].to_list())
