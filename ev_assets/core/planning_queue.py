"""Transformer planning queue (issue 12 item 4): one row per transformer, ranked by a risk score
over a rolling window of days. Pure polars.

The window is the `window_days` local days ending on `as_of` (the latest load_date of
transformer_daily_load: today in live operation, the data's last day for an imported history).
From the transformer's daily rows in the window (a day without EV load has no row and counts as
zero load, zero hours over and zero loss of life):

- u = peak_utilization: the largest daily utilization (peak EV kVA / kva_rating);
- h = hours_over_rating / window_days: hours per day above the rating (sum of minutes_above_rating / 60);
- L = loss_of_life_h / (24 x window_days): the window's equivalent aging (1 = the 110 °C reference
  rate all the time; C57.91 clause 5);
- g = ev_count_growth = ev_count_second_half - ev_count_first_half: the largest daily ev_count
  of the later half of the window (its last window_days // 2 days) minus that of the earlier half.

- y = years_to_likely_overload: from transformer_overload_forecast (base scenario), the first year
  with a >= 50 % chance of exceeding the planning threshold minus the year of `as_of` (1 = next
  year); null when the forecast sees none in its horizon or has not run. It enters as 1 / y, so
  an overload expected next year weighs w_f, in two years w_f / 2, never 0.

    risk_score = w_u x u + w_h x h + w_L x L + w_g x g + w_f x (1 / y)

with the weights EV_RISK_WEIGHT_UTILIZATION, EV_RISK_WEIGHT_HOURS_OVER_RATING,
EV_RISK_WEIGHT_LOSS_OF_LIFE, EV_RISK_WEIGHT_EV_GROWTH, EV_RISK_WEIGHT_OVERLOAD_SOON. A term that
is null (the rating unknown, no overload forecast) counts 0. rank 1 is the highest score; ties go
to the smaller transformer_id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl


@dataclass(frozen=True)
class RiskWeights:
    utilization: float = 1.0
    hours_over_rating: float = 1.0
    loss_of_life: float = 1.0
    ev_growth: float = 0.1
    overload_soon: float = 1.0


def window(as_of: date, window_days: int) -> tuple[date, date]:
    """(first, last) local day of the window ending on as_of."""
    return as_of - timedelta(days=window_days - 1), as_of


def planning_queue(
    daily: pl.DataFrame,
    *,
    as_of: date,
    window_days: int,
    weights: RiskWeights = RiskWeights(),
    updated_at: datetime,
    first_overload_years: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The queue from transformer_daily_load rows (any days: those outside the window are ignored)
    and, when given, each transformer's first_year_p50 of the overload forecast
    (transformer_id, first_year_p50; a transformer missing from it has no forecast term)."""
    first, last = window(as_of, window_days)
    second_half_from = last - timedelta(days=window_days // 2 - 1)
    rows = daily.filter(pl.col("load_date").is_between(first, last)).sort("transformer_id", "load_date")
    in_second = pl.col("load_date") >= second_half_from
    agg = rows.group_by("transformer_id").agg(
        pl.col("feeder_id").drop_nulls().last(),
        pl.col("kva_rating").drop_nulls().last(),
        pl.len().cast(pl.Int64).alias("days_with_load"),
        pl.col("utilization").max().alias("peak_utilization"),
        (pl.col("minutes_above_rating").sum() / 60).alias("hours_over_rating"),
        pl.col("minutes_above_rating").is_not_null().any().alias("_rated"),
        pl.col("loss_of_life_h").sum().alias("loss_of_life_h"),
        pl.col("loss_of_life_h").is_not_null().any().alias("_aged"),
        pl.col("ev_count").filter(~in_second).max().fill_null(0).cast(pl.Int64).alias("ev_count_first_half"),
        pl.col("ev_count").filter(in_second).max().fill_null(0).cast(pl.Int64).alias("ev_count_second_half"),
    )
    agg = agg.with_columns(
        pl.when(pl.col("_rated")).then(pl.col("hours_over_rating")).alias("hours_over_rating"),
        pl.when(pl.col("_aged")).then(pl.col("loss_of_life_h")).alias("loss_of_life_h"),
        (pl.col("ev_count_second_half") - pl.col("ev_count_first_half")).alias("ev_count_growth"),
    )
    if first_overload_years is None:
        first_overload_years = pl.DataFrame(schema={"transformer_id": pl.String, "first_year_p50": pl.Int64})
    years = first_overload_years.select(
        "transformer_id",
        # A forecast year is after as_of's; clip at 1 so a forecast older than the load cannot divide by 0.
        (pl.col("first_year_p50") - as_of.year).clip(lower_bound=1).cast(pl.Int64).alias("years_to_likely_overload"),
    )
    agg = agg.join(years, on="transformer_id", how="left")
    score = (
        weights.utilization * pl.col("peak_utilization").fill_null(0.0)
        + weights.hours_over_rating * (pl.col("hours_over_rating") / window_days).fill_null(0.0)
        + weights.loss_of_life * (pl.col("loss_of_life_h") / (24.0 * window_days)).fill_null(0.0)
        + weights.ev_growth * pl.col("ev_count_growth").cast(pl.Float64)
        + weights.overload_soon * (1.0 / pl.col("years_to_likely_overload")).fill_null(0.0)
    )
    return (
        agg.with_columns(score.alias("risk_score"))
        .sort(["risk_score", "transformer_id"], descending=[True, False])
        .with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("rank"),
            pl.lit(first).alias("window_first_day"),
            pl.lit(last).alias("window_last_day"),
            pl.lit(updated_at).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
        )
        .drop("_rated", "_aged")
    )
