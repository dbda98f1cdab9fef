"""Charts a person reads in the Dagster UI: PNG images embedded in a materialization's markdown.

Rendered with matplotlib's Agg backend (no display), in local time, with rounded numbers. An image
in markdown (`![...](data:image/png;base64,...)`) is what Dagster's UI shows inline; the chart's
numbers are also in the metadata's tables, for a reader who copies them.
"""

from __future__ import annotations

import base64
import io
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, the same pixels everywhere

import matplotlib.dates as mdates  # noqa: E402 - after the backend is chosen
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

INTERVAL = timedelta(minutes=15)


def local_day_profile(profile: pl.DataFrame, day: date, tz: str) -> pl.DataFrame:
    """A local day's 15-minute profile (interval_start UTC, kw) on every interval of the day
    (92, 96 or 100 of them: DST days), 0 where no row, with the interval's local start."""
    zone = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(UTC)
    slots = pl.DataFrame(
        {"interval_start": pl.datetime_range(start, end - INTERVAL, INTERVAL, time_zone="UTC", eager=True)}
    )
    loads = profile.select(pl.col("interval_start").dt.convert_time_zone("UTC"), pl.col("kw").cast(pl.Float64))
    return slots.join(loads, on="interval_start", how="left").select(
        "interval_start",
        pl.col("interval_start").dt.convert_time_zone(tz).alias("local_start"),
        pl.col("kw").fill_null(0.0),
    )


def profile_chart_png(profile: pl.DataFrame, day: date, tz: str, title: str, rating_kw: float | None = None) -> bytes:
    """The day's 15-minute EV load as a step chart, local time on the x axis, against the rating
    (kW at the power factor) when there is one."""
    frame = local_day_profile(profile, day, tz)
    local = [ts.replace(tzinfo=None) for ts in frame["local_start"].to_list()]
    kw = frame["kw"].to_list()
    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        axes.fill_between(local, kw, step="post", alpha=0.35, color="tab:blue")
        axes.step(local, kw, where="post", color="tab:blue", label="EV load, kW (15-minute average)")
        if rating_kw:
            axes.axhline(rating_kw, color="tab:red", linestyle="--", label=f"rating {rating_kw:,.2f} kW")
        axes.set_xlim(local[0], local[-1] + INTERVAL)
        axes.set_ylim(0, max([*kw, rating_kw or 0.0]) * 1.1 or 1.0)
        axes.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, 3)))
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        axes.set_xlabel(f"local time ({tz}), {day.isoformat()}")
        axes.set_ylabel("kW")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right", fontsize=8)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def forecast_chart_png(rows: pl.DataFrame, title: str) -> bytes:
    """Per transformer (one panel each, at most a few): the P50 and P90 of the year's peak kVA (EV +
    base load) by year, and under managed charging, against the rating (kVA). `rows`: yearly
    transformer_overload_forecast rows of the transformers shown."""
    names = rows["transformer_id"].unique(maintain_order=True).to_list()
    figure, axes_list = plt.subplots(len(names), 1, figsize=(8, 2.4 * len(names)), dpi=100, squeeze=False)
    try:
        for axes, name in zip(axes_list[:, 0], names, strict=True):
            one = rows.filter(pl.col("transformer_id") == name).sort("year")
            years = one["year"].to_list()
            rating = one["kva_rating"][0]
            axes.plot(years, one["peak_kva_p50"].to_list(), marker="o", color="tab:blue", label="P50 peak, kVA")
            axes.plot(years, one["peak_kva_p90"].to_list(), marker="o", linestyle="--", color="tab:blue", label="P90")
            axes.plot(
                years, one["peak_kva_p90_managed"].to_list(), linestyle=":", color="tab:green", label="P90, managed"
            )
            if rating:
                axes.axhline(rating, color="tab:red", linestyle="--", label=f"rating {rating:,.1f} kVA")
            first = one["first_year_p50"][0]
            axes.set_title(f"{name}: first year P(overload) >= 50 %: {first}", fontsize=9)
            axes.set_ylabel("kVA")
            axes.set_xticks(years)
            axes.grid(alpha=0.3)
            axes.legend(loc="upper left", fontsize=7)
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows the PNG inline (a data URI: nothing to host)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
