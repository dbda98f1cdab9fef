"""Session stage: pair start and end messages into charging sessions, per meter.

Pure polars. The feed never pairs its messages (DOMAIN.md). Per meter, in time order, an end
message closes the session of the message just before it when that message is a start and the
end is later than the start. Pairs at most `max_session` apart always pair; a pair further apart
(a car left plugged in for days) pairs only when it is consistent: the end's energy is at most
ChargeW x (end - start) x `charge_w_tolerance` (otherwise the start's end was lost and this end
belongs to a start that was lost). What is left over is kept, not dropped: a start with no end
yet is `start_only` while it is at most `max_session` old (still charging) and `timed_out` after
that (its end is late or lost; it becomes `complete` if its end arrives); an end with no start
is `end_only`. At equal times an end comes before a start, so back-to-back sessions (an end at t
and the next start at t on the same meter: unplug and replug, or a second car on the charger)
are two complete sessions.

Pairing looks only at neighbours, so it can be recomputed on a window: `pairing_window` says
which stored events a batch must be paired with, and which stored sessions it may replace; the
sessions step adds each touched meter's neighbouring events outside the window (an open start
before it, an end after it), so a session of any length is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from ev_assets.core.enrich import ATTRIBUTION_COLUMNS
from ev_assets.core.events import ISO_MICROS, id_time, meter_id_prefixes, meter_prefixes

# Average power may exceed the session's own ChargeW by this factor (metering and rounding).
DEFAULT_CHARGE_W_TOLERANCE = 1.1


def pair_sessions(
    events: pl.DataFrame,
    *,
    max_session: timedelta,
    updated_at: datetime,
    as_of: datetime | None = None,
    charge_w_tolerance: float = DEFAULT_CHARGE_W_TOLERANCE,
) -> pl.DataFrame:
    """Sessions (the ev_charging_sessions columns) from event rows of any set of meters.

    `as_of` (default `updated_at`): a start with no end older than `max_session` at that time is
    `timed_out`, a younger one `start_only`."""
    as_of = as_of or updated_at
    # At equal times an end sorts before a start: back-to-back sessions (one ends at t, the next
    # starts at t on the same meter) close the first before opening the second.
    end_first = pl.when(pl.col("message_type") == "end").then(0).otherwise(1)
    ordered = events.sort(["meter_id", "message_time", end_first, "message_id"])
    nxt = lambda c: pl.col(c).shift(-1).over("meter_id")  # noqa: E731
    prv = lambda c: pl.col(c).shift(1).over("meter_id")  # noqa: E731

    def gap_ok(later: pl.Expr, earlier: pl.Expr, energy_wh: pl.Expr, charge_w: pl.Expr) -> pl.Expr:
        # Within max_session: a pair. Further apart: a pair only if the energy fits the charger.
        hours = (later - earlier).dt.total_microseconds() / 3.6e9
        fits = (energy_wh <= charge_w * hours * charge_w_tolerance).fill_null(True)
        return (later > earlier) & ((later - earlier <= max_session) | fits)

    flagged = ordered.with_columns(
        (
            (pl.col("message_type") == "start")
            & (nxt("message_type") == "end")
            & gap_ok(nxt("message_time"), pl.col("message_time"), nxt("charge_energy_wh"), pl.col("charge_w"))
        )
        .fill_null(False)
        .alias("_closes_next"),
        (
            (pl.col("message_type") == "end")
            & (prv("message_type") == "start")
            & gap_ok(pl.col("message_time"), prv("message_time"), pl.col("charge_energy_wh"), prv("charge_w"))
        )
        .fill_null(False)
        .alias("_closed_by_prev"),
    ).with_columns(
        *[nxt(c).alias(f"_next_{c}") for c in ("message_id", "message_time", "charge_energy_wh", "charge_duration")]
    )

    starts = flagged.filter(pl.col("message_type") == "start").select(
        "meter_id",
        *ATTRIBUTION_COLUMNS,
        pl.when(pl.col("_closes_next"))
        .then(pl.lit("complete"))
        .when(pl.col("message_time") < pl.lit(as_of).cast(pl.Datetime("us", "UTC")) - max_session)
        .then(pl.lit("timed_out"))
        .otherwise(pl.lit("start_only"))
        .alias("status"),
        pl.col("message_date").alias("event_date"),
        pl.col("message_time").alias("start_time"),
        pl.when(pl.col("_closes_next")).then(pl.col("_next_message_time")).alias("end_time"),
        "charge_w",
        pl.when(pl.col("_closes_next")).then(pl.col("_next_charge_energy_wh")).alias("energy_wh"),
        pl.when(pl.col("_closes_next")).then(pl.col("_next_charge_duration")).alias("reported_duration"),
        pl.col("message_id").alias("start_message_id"),
        pl.when(pl.col("_closes_next")).then(pl.col("_next_message_id")).alias("end_message_id"),
    )
    ends = flagged.filter((pl.col("message_type") == "end") & ~pl.col("_closed_by_prev")).select(
        "meter_id",
        *ATTRIBUTION_COLUMNS,
        pl.lit("end_only").alias("status"),
        pl.col("message_date").alias("event_date"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("start_time"),
        pl.col("message_time").alias("end_time"),
        pl.lit(None, dtype=pl.Float64).alias("charge_w"),
        pl.col("charge_energy_wh").alias("energy_wh"),
        pl.col("charge_duration").alias("reported_duration"),
        pl.lit(None, dtype=pl.String).alias("start_message_id"),
        pl.col("message_id").alias("end_message_id"),
    )
    sessions = pl.concat([starts, ends], how="vertical_relaxed")
    duration_h = (pl.col("end_time") - pl.col("start_time")).dt.total_microseconds() / 3.6e9
    return sessions.with_columns(
        session_id(),
        duration_h.alias("duration_h"),
        (pl.col("energy_wh") / duration_h / 1000).alias("average_kw"),
        pl.lit(updated_at).cast(pl.Datetime("us", "UTC")).alias("updated_at"),
    ).sort("meter_id", pl.coalesce("start_time", "end_time"))


def session_id() -> pl.Expr:
    """meter|start time, or meter|end|end time for an end with no start: stable across replays.

    A meter's ids therefore sort together and, those with a start, by start time (identifiers
    have no '|', so no meter's ids fall among another's): the primary key reads a meter's
    sessions by start time (`session_id_range`)."""
    anchor = (
        pl.when(pl.col("start_time").is_not_null())
        .then(pl.col("start_time").dt.strftime(ISO_MICROS))
        .otherwise(pl.concat_str([pl.lit("end|"), pl.col("end_time").dt.strftime(ISO_MICROS)]))
    )
    return pl.concat_str([pl.col("meter_id"), anchor], separator="|").alias("session_id")


def session_id_range(meter_ids: list[str], start_from: datetime | None = None, start_to: datetime | None = None):
    """(prefixes, low, high) of the session ids of `meter_ids` that start in [start_from,
    start_to] (Warehouse.read_id_ranges), or of all their sessions when no times are given."""
    if start_from is None or start_to is None:
        return meter_prefixes(meter_ids)
    return meter_id_prefixes(meter_ids), id_time(start_from), id_time(start_to)


@dataclass(frozen=True)
class PairingWindow:
    """For the meters a batch touched: re-pair the stored events in [read_from, read_to] and
    replace the stored sessions anchored (start, or end for end_only) in [write_from, write_to].

    Why this is exact: a message changes only the pairing of its neighbours (the meter's events
    just before and after it). Within the window every neighbour is read; at its edges, the
    sessions step adds each meter's last events before write_from and first events after
    write_to (`edge_session_ids`), whatever their distance, and replaces the sessions they
    anchor too: a session longer than max_session is still found, at the cost of two indexed
    look-ups per batch, not of history.
    """

    meter_ids: list[str]
    read_from: datetime
    read_to: datetime
    write_from: datetime
    write_to: datetime


def pairing_window(batch_events: pl.DataFrame, max_session: timedelta) -> PairingWindow | None:
    if batch_events.is_empty():
        return None
    first = batch_events["message_time"].min()
    last = batch_events["message_time"].max()
    return PairingWindow(
        meter_ids=batch_events["meter_id"].unique().sort().to_list(),
        read_from=first - 2 * max_session,
        read_to=last + 2 * max_session,
        write_from=first - max_session,
        write_to=last + max_session,
    )


def anchored_within(
    sessions: pl.DataFrame, window: PairingWindow, also_ids: pl.Series | list[str] | None = None
) -> pl.DataFrame:
    """Sessions anchored in the write window, and those whose id is in `also_ids`."""
    anchor = pl.coalesce("start_time", "end_time")
    keep = anchor.is_between(window.write_from, window.write_to)
    if also_ids is not None:
        keep = keep | pl.col("session_id").is_in(pl.Series(also_ids, dtype=pl.String).implode())
    return sessions.filter(keep)


def edge_session_ids(edge_events: pl.DataFrame) -> list[str]:
    """Ids of the sessions the window's edge events can anchor: a start before the window (its
    session, whatever its status) and an end after it (its end_only session)."""
    ids = edge_events.select(
        pl.when(pl.col("message_type") == "start")
        .then(pl.concat_str([pl.col("meter_id"), pl.col("message_time").dt.strftime(ISO_MICROS)], separator="|"))
        .otherwise(
            pl.concat_str(
                [pl.col("meter_id"), pl.lit("end"), pl.col("message_time").dt.strftime(ISO_MICROS)], separator="|"
            )
        )
        .alias("session_id")
    )
    return sorted(set(ids["session_id"].to_list()))


def duration_agreement(sessions: pl.DataFrame, unit_seconds: float) -> dict[str, float | int]:
    """How many complete sessions report a ChargeDuration that agrees with their timestamps in the
    configured unit (within half a unit, for rounding, plus 5 %)."""
    complete = sessions.filter(pl.col("status") == "complete", pl.col("reported_duration").is_not_null())
    if complete.is_empty():
        return {"sessions": 0, "agreeing": 0, "share": 1.0}
    derived_units = pl.col("duration_h") * 3600 / unit_seconds
    agrees = (pl.col("reported_duration") - derived_units).abs() <= 0.5 + 0.05 * derived_units
    agreeing = int(complete.select(agrees.sum()).item())
    return {"sessions": complete.height, "agreeing": agreeing, "share": agreeing / complete.height}
