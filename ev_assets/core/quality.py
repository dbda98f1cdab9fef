"""Quality stage: flag paired sessions that are physically doubtful. Pure polars.

A complete session is trusted unless one of these checks fails; each failure adds a code to
`quality_flags` (comma-separated, null when trusted) and a sentence to `quality_reasons` (a JSON
list). A flagged session stays in the table and in the load, but apart: the daily load tables
count its energy in `flagged_energy_kwh` and `flagged_session_count`, never in `peak_kw` or
`energy_kwh`.
"""

from __future__ import annotations

import polars as pl

QUALITY_FLAGS: dict[str, str] = {
    "power_above_charger_max": (
        "Average power (energy / duration) exceeds EV_CHARGE_W_MAX: no home charger delivers it."
    ),
    "power_above_charge_w": "Average power exceeds the session's own ChargeW x EV_CHARGE_W_TOLERANCE.",
    "duration_mismatch": (
        "The reported ChargeDuration disagrees with end - start by more than half a unit plus 5 % "
        "(the duration_agreement rule); checked only when EV_DURATION_UNIT_VERIFIED says the unit is known to agree."
    ),
    "overlapping": (
        "The session starts before the previous session on the same meter ends, or ends after the "
        "next one starts (strictly: back-to-back sessions are not an overlap)."
    ),
}


def _round(expr: pl.Expr, digits: int = 2) -> pl.Expr:
    return expr.round(digits).cast(pl.String)


def flag_sessions(
    sessions: pl.DataFrame,
    *,
    charge_w_max: float,
    charge_w_tolerance: float,
    duration_unit_seconds: float | None = None,
) -> pl.DataFrame:
    """`sessions` with quality_flags and quality_reasons (null for trusted and unpaired sessions).

    `duration_unit_seconds`: the unit of the reported ChargeDuration when it is known to agree
    with the timestamps; None skips the duration check. Overlaps are found among the sessions
    given, so give every session of a meter that can neighbour the ones to be written."""
    complete = (pl.col("status") == "complete") & pl.col("start_time").is_not_null() & pl.col("end_time").is_not_null()
    avg_w = pl.col("average_kw") * 1000
    ordered = sessions.with_columns(pl.int_range(pl.len()).alias("_row")).sort(
        "meter_id", "start_time", nulls_last=True
    )
    closed = pl.when(complete)
    prev_end = closed.then(pl.col("end_time")).cum_max().shift(1).over("meter_id")
    next_start = closed.then(pl.col("start_time")).reverse().cum_min().reverse().shift(-1).over("meter_id")
    checks: list[tuple[str, pl.Expr, pl.Expr]] = [
        (
            "power_above_charger_max",
            avg_w > charge_w_max,
            pl.concat_str(
                [
                    pl.lit("average power "),
                    _round(pl.col("average_kw")),
                    pl.lit(f" kW exceeds EV_CHARGE_W_MAX ({charge_w_max / 1000:g} kW)"),
                ]
            ),
        ),
        (
            "power_above_charge_w",
            avg_w > pl.col("charge_w") * charge_w_tolerance,
            pl.concat_str(
                [
                    pl.lit("average power "),
                    _round(pl.col("average_kw")),
                    pl.lit(" kW exceeds the session's ChargeW "),
                    _round(pl.col("charge_w") / 1000),
                    pl.lit(f" kW x {charge_w_tolerance:g}"),
                ]
            ),
        ),
        (
            "overlapping",
            (pl.col("start_time") < pl.col("_prev_end")) | (pl.col("end_time") > pl.col("_next_start")),
            pl.concat_str([pl.lit("overlaps another session on meter "), pl.col("meter_id")]),
        ),
    ]
    if duration_unit_seconds is not None:
        derived = pl.col("duration_h") * 3600 / duration_unit_seconds
        checks.append(
            (
                "duration_mismatch",
                (pl.col("reported_duration") - derived).abs() > 0.5 + 0.05 * derived,
                pl.concat_str(
                    [
                        pl.lit("reported duration "),
                        _round(pl.col("reported_duration")),
                        pl.lit(" disagrees with end - start, "),
                        _round(derived),
                        pl.lit(" in the configured unit"),
                    ]
                ),
            )
        )
    flagged = ordered.with_columns(prev_end.alias("_prev_end"), next_start.alias("_next_start")).with_columns(
        *[
            pl.when(complete & failed.fill_null(False)).then(pl.lit(code)).alias(f"_flag_{code}")
            for code, failed, _ in checks
        ],
        *[
            pl.when(complete & failed.fill_null(False))
            # Sentences hold codes, numbers and a meter id (letters, digits, '.', '-', '_'): no
            # character needs escaping in a JSON string.
            .then(pl.concat_str([pl.lit(f'"{code}: '), sentence, pl.lit('"')]))
            .alias(f"_why_{code}")
            for code, failed, sentence in checks
        ],
    )
    codes = pl.concat_str([pl.col(f"_flag_{c}") for c, _, _ in checks], separator=",", ignore_nulls=True)
    reasons = pl.concat_str([pl.col(f"_why_{c}") for c, _, _ in checks], separator=",", ignore_nulls=True)
    return (
        flagged.with_columns(
            pl.when(codes != "").then(codes).alias("quality_flags"),
            pl.when(codes != "").then(pl.concat_str([pl.lit("["), reasons, pl.lit("]")])).alias("quality_reasons"),
        )
        .sort("_row")
        .drop("_row", "_prev_end", "_next_start", pl.selectors.starts_with("_flag_", "_why_"))
    )
