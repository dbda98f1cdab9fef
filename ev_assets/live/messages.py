"""What the live service publishes: topics, message bodies, a transformer's live state and the
overload alert rule. Pure polars (no broker, no database).

Topics (`<prefix>` = EV_MQTT_TOPIC_PREFIX, default `ev`):

- `<prefix>/transformer/<TransformerID>/events`: every accepted start and end, enriched (not retained);
- `<prefix>/transformer/<TransformerID>/state`: the transformer's EV load now (retained);
- `<prefix>/transformer/<TransformerID>/alert`: its overload alert, raised or cleared (retained).

An event whose transformer is unknown (meter not in the reference data and no TransformerID
reported) goes to `<prefix>/transformer/_unattributed/events`; it loads no known transformer.

Event bodies are the spec's record (its field names, numbers as strings, the other message type's
fields null: `ev_assets.api.spec_shape`, the events API's own shape) with the identity fields
as of the event date, plus EventID (the warehouse's message_id: meter|type|time), FeederID,
SubstationID and the session (SessionID as in ev_charging_sessions; an end also its status, start,
end, energy and duration). State and alert bodies are this service's own: JSON numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from ev_assets.api.spec_shape import spec_number, spec_records, spec_time
from ev_assets.core.contract import ContractBounds
from ev_assets.live.store import Message, iso

UNATTRIBUTED = "_unattributed"
# A state is published again only when one of these changed (not for a new AsOf alone).
STATE_CONTENT = ("EVkW", "EVkVA", "ActiveEVs", "KVARating", "Utilization", "BaseKVA", "LoadPU", "AlertActive")


@dataclass(frozen=True)
class LiveRules:
    """The settings the live view computes with: the pipeline's own (same names, same meaning)
    and the alert's hysteresis."""

    timezone: str
    bounds: ContractBounds
    max_session: timedelta
    charge_w_tolerance: float
    power_factor: float
    planning_threshold: float
    base_load_pu: tuple[float, ...]
    base_load_scale: float
    hysteresis: float
    topic_prefix: str = "ev"

    def topic(self, transformer_id: str | None, leaf: str) -> str:
        return f"{self.topic_prefix}/transformer/{transformer_id or UNATTRIBUTED}/{leaf}"


def _ms(ts: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and Z, as the spec writes times."""
    return None if ts is None else iso(ts)[:-4] + "Z"


def event_messages(events: pl.DataFrame, rules: LiveRules) -> list[Message]:
    """One message per event row (enriched, with the session columns `processor` adds), in the
    frame's order. A loop over rows: each message is its own JSON document, the output itself."""
    messages = []
    records = spec_records(events).iter_rows(named=True)
    session_fields = events.select(
        SessionStartTime=spec_time("session_start_time"),
        SessionEndTime=spec_time("session_end_time"),
        SessionEnergy=spec_number("session_energy_wh"),
        SessionDurationHours=spec_number("session_duration_h"),
    ).iter_rows(named=True)
    for row, record, session in zip(events.iter_rows(named=True), records, session_fields, strict=True):
        body = {
            "EventID": row["message_id"],
            "MessageType": row["message_type"],
            **record,
            "FeederID": row["feeder_id"],
            "SubstationID": row["substation_id"],
            "EnrichmentStatus": row["enrichment_status"],
            "SessionID": row["session_id"],
        }
        if row["message_type"] == "end":
            body |= {"SessionStatus": row["session_status"], **session}
        messages.append(
            Message(
                kind=row["message_type"],
                topic=rules.topic(row["transformer_id"], "events"),
                body=body,
                retain=False,
                transformer_id=row["transformer_id"],
                event_id=row["message_id"],
            )
        )
    return messages


def base_load_pu(rules: LiveRules, now: datetime) -> float:
    """The base (non-EV) load in per-unit of the rating at `now`: the aging model's profile value
    for the local hour (core.transformer_aging, EV_BASE_LOAD_PU_PROFILE), before a transformer's scale."""
    return rules.base_load_pu[now.astimezone(ZoneInfo(rules.timezone)).hour]


def transformer_states(
    transformer_ids: list[str],
    open_sessions: pl.DataFrame,
    grid: pl.DataFrame,
    rules: LiveRules,
    now: datetime,
) -> pl.DataFrame:
    """Per transformer: ev_kw (the ChargeW sum of its open sessions), ev_kva (at EV_POWER_FACTOR,
    as the daily load's peak_kva), active_evs, kva_rating, utilization (EV kVA / rating, as
    transformer_daily_load.utilization), base_kva (the aging model's base load now) and load_pu
    ((EV kVA + base kVA) / rating: what the alert compares with EV_PLANNING_THRESHOLD).

    `grid`: transformer_id, feeder_id, substation_id, kva_rating, base_load_scale as of today."""
    ids = pl.DataFrame({"transformer_id": transformer_ids}, schema={"transformer_id": pl.String})
    load = open_sessions.group_by("transformer_id").agg(
        (pl.col("charge_w").sum() / 1000).alias("ev_kw"), pl.len().cast(pl.Int64).alias("active_evs")
    )
    scale = pl.col("base_load_scale").fill_null(rules.base_load_scale)
    return (
        ids.join(load, on="transformer_id", how="left")
        .join(grid, on="transformer_id", how="left")
        .with_columns(pl.col("ev_kw").fill_null(0.0), pl.col("active_evs").fill_null(0))
        .with_columns(
            (pl.col("ev_kw") / rules.power_factor).alias("ev_kva"),
            (base_load_pu(rules, now) * scale * pl.col("kva_rating")).alias("base_kva"),
        )
        .with_columns(
            (pl.col("ev_kva") / pl.col("kva_rating")).alias("utilization"),
            ((pl.col("ev_kva") + pl.col("base_kva")) / pl.col("kva_rating")).alias("load_pu"),
        )
        .sort("transformer_id")
    )


def alert_decisions(states: pl.DataFrame, active: dict[str, bool], rules: LiveRules) -> pl.DataFrame:
    """`states` with `raise` and `clear`: raise when no alert is active and load_pu exceeds the
    planning threshold; clear an active one only below the threshold minus the hysteresis, so a
    load hovering at the threshold raises one alert, not one per message. No rating: no decision."""
    was = pl.DataFrame(
        {"transformer_id": list(active), "_active": list(active.values())},
        schema={"transformer_id": pl.String, "_active": pl.Boolean},
    )
    threshold = rules.planning_threshold
    return (
        states.join(was, on="transformer_id", how="left")
        .with_columns(pl.col("_active").fill_null(False))
        .with_columns(
            (~pl.col("_active") & (pl.col("load_pu") > threshold)).fill_null(False).alias("raise"),
            (pl.col("_active") & (pl.col("load_pu") < threshold - rules.hysteresis)).fill_null(False).alias("clear"),
        )
        .with_columns(((pl.col("_active") | pl.col("raise")) & ~pl.col("clear")).alias("alert_active"))
        .drop("_active")
    )


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def state_body(row: dict, now: datetime, rules: LiveRules) -> dict:
    return {
        "TransformerID": row["transformer_id"],
        "FeederID": row["feeder_id"],
        "SubstationID": row["substation_id"],
        "AsOf": _ms(now),
        "EVkW": _rounded(row["ev_kw"]),
        "EVkVA": _rounded(row["ev_kva"]),
        "ActiveEVs": row["active_evs"],
        "KVARating": row["kva_rating"],
        "Utilization": _rounded(row["utilization"]),
        "BaseKVA": _rounded(row["base_kva"]),
        "LoadPU": _rounded(row["load_pu"]),
        "PlanningThreshold": rules.planning_threshold,
        "AlertActive": row["alert_active"],
    }


def state_changed(old: dict | None, new: dict) -> bool:
    return old is None or any(old.get(k) != new.get(k) for k in STATE_CONTENT)


def alert_body(row: dict, previous: dict | None, now: datetime, rules: LiveRules) -> dict:
    """The alert as raised (a new AlertID: transformer|time raised) or cleared (the raised alert's
    AlertID and RaisedAt, with ClearedAt): a consumer pairs a clear with its raise by AlertID."""
    raised = row["raise"]
    raised_at = _ms(now) if raised else (previous or {}).get("RaisedAt")
    return {
        "AlertID": f"{row['transformer_id']}|{raised_at}",
        "TransformerID": row["transformer_id"],
        "FeederID": row["feeder_id"],
        "SubstationID": row["substation_id"],
        "Active": raised,
        "RaisedAt": raised_at,
        "ClearedAt": None if raised else _ms(now),
        "LoadPU": _rounded(row["load_pu"]),
        "EVkVA": _rounded(row["ev_kva"]),
        "BaseKVA": _rounded(row["base_kva"]),
        "KVARating": row["kva_rating"],
        "PlanningThreshold": rules.planning_threshold,
        "ClearBelowPU": round(rules.planning_threshold - rules.hysteresis, 6),
    }
