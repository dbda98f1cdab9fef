"""A synthetic micro-batch of exactly N messages, for the validation-throughput scenario.

The simulator (ev_assets.simulator) writes realistic but small files (a few messages per
5-minute window), so the message count of a month is whatever the EV population produces. The
contract's throughput wants a fixed, large batch instead: this builds N messages (N/2 start+end
pairs) in the spec's format, numbers as strings, on the real meters of a generated utility, and
can corrupt a known share of them in known ways, so the expected rejection count is exact.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

BASE = datetime(2024, 6, 1, tzinfo=UTC)
# Chosen so that the contract's "now" (received_in_future, event_in_future) never fires.
CONTRACT_NOW = datetime(2024, 9, 1, tzinfo=UTC)
CORRUPTIONS = ("blank_meter_id", "garbage_number", "timestamp_without_offset", "ambiguous_type", "implausible_charge_w")


def _iso(moment: datetime) -> str:
    """2024-06-01T18:00:05.12Z: UTC, two fractional digits, as the agent sends."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 10_000:02d}Z"


def identities(utility: dict[str, pl.DataFrame]) -> list[dict[str, str]]:
    """The identity fields of every meter currently in service (the spec's names)."""
    meters = utility["meters"].filter(pl.col("effective_to").is_null())
    points = utility["service_points"].filter(pl.col("effective_to").is_null())
    joined = meters.join(points, on="service_point_id").sort("meter_id")
    return [
        {
            "ServicePointID": r["service_point_id"],
            "MeterID": r["meter_id"],
            "MeterNumber": r["meter_number"],
            "ESN": r["esn"],
            "TransformerID": r["transformer_id"],
            "PremiseID": r["premise_id"],
        }
        for r in joined.iter_rows(named=True)
    ]


def session_pair(identity: dict[str, str], start: datetime, rng: random.Random) -> tuple[dict, dict]:
    """A valid start message and its end message, fields in the spec's order."""
    hours = rng.uniform(1.0, 8.0)
    watts = rng.uniform(1400.0, 11500.0)
    end = start + timedelta(hours=hours)
    common = {k: identity[k] for k in ("ServicePointID", "MeterID", "MeterNumber", "ESN", "TransformerID", "PremiseID")}
    start_msg = {
        **common,
        "ReceivedTime": _iso(start + timedelta(seconds=rng.uniform(1, 60))),
        "ChargeStartTime": _iso(start),
        "ChargeEndTime": None,
        "ChargeW": f"{watts:.2f}",
        "ChargeDuration": None,
        "ChargeEnergy": None,
    }
    end_msg = {
        **common,
        "ReceivedTime": _iso(end + timedelta(seconds=rng.uniform(1, 60))),
        "ChargeStartTime": None,
        "ChargeEndTime": _iso(end),
        "ChargeW": None,
        "ChargeDuration": str(max(1, round(hours))),
        "ChargeEnergy": f"{watts * hours:.2f}",
    }
    return start_msg, end_msg


def build_messages(utility: dict[str, pl.DataFrame], count: int, seed: int = 7, base: datetime = BASE) -> list[dict]:
    """`count` valid messages: sessions round-robin over the meters, one a day each, so no two
    messages share an identity (no duplicates) and every meter's sessions follow each other."""
    rng = random.Random(seed)
    people = identities(utility)
    messages: list[dict] = []
    for k in range(count // 2):
        identity = people[k % len(people)]
        day = k // len(people)
        start = base + timedelta(days=day, hours=17, seconds=rng.uniform(0, 5 * 3600))
        messages.extend(session_pair(identity, start, rng))
    return messages


def corrupt(messages: list[dict], every: int = 10) -> int:
    """Break one message of every `every`-th session, cycling through CORRUPTIONS; returns how
    many were broken (each is one rejected record). every=10 -> 5 % of the messages."""
    broken = 0
    for pair in range(0, len(messages) // 2, every):
        kind = CORRUPTIONS[(pair // every) % len(CORRUPTIONS)]
        # Alternate start and end messages, except where only a start can carry the fault.
        use_end = (pair // (every * len(CORRUPTIONS))) % 2 == 1 and kind != "implausible_charge_w"
        _break(messages[2 * pair + use_end], kind)
        broken += 1
    return broken


def _break(message: dict, kind: str) -> None:
    is_start = message["ChargeStartTime"] is not None
    if kind == "blank_meter_id":
        message["MeterID"] = "  "
    elif kind == "garbage_number":
        message["ChargeW" if is_start else "ChargeEnergy"] = "7,2O0.5"
    elif kind == "timestamp_without_offset":
        message["ReceivedTime"] = message["ReceivedTime"].removesuffix("Z")
    elif kind == "ambiguous_type":
        message["ChargeEnergy" if is_start else "ChargeW"] = "7200.00"
    elif kind == "implausible_charge_w":
        message["ChargeW"] = "250000.00"
    else:
        raise ValueError(kind)


def write_files(messages: list[dict], folder: Path, files: int) -> list[Path]:
    """Split the messages into `files` payload files named like the agent's (sorted by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(messages) // files)  # ceiling division
    paths = []
    for i in range(files):
        chunk = messages[i * size : (i + 1) * size]
        if not chunk:
            break
        path = folder / f"ev_bench_{i:05d}.json"
        lines = ",\n".join(json.dumps(m, separators=(",", ":")) for m in chunk)
        path.write_text('{"EVChargingEvents": [\n' + lines + "\n]}\n")
        paths.append(path)
    return paths
