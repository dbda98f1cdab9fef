"""Push a simulated feed to a stream receiver instead of writing files: one payload per simulated
file window, JSON (the spec's form, numbers as strings) or Avro (single-object encoding of
`EVAwarenessCollection`), with a bearer token. Over real HTTP with httpx; transient failures
(connection errors, 429, 5xx) are retried with backoff by tenacity, a 4xx is a clear error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import httpx
import polars as pl
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from ev_assets.core import avro_schema
from ev_assets.synthetic.simulator import SimulationConfig, _payload_lines

PushFormat = Literal["json", "avro"]
DEFAULT_CONFIG = SimulationConfig()


@dataclass(frozen=True)
class PushSummary:
    payloads: int
    messages: int
    seconds: float

    @property
    def payloads_per_s(self) -> float:
        return self.payloads / self.seconds if self.seconds else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class PushRefused(RuntimeError):
    """The receiver refused a payload for good (a 4xx other than 429)."""


def payloads(messages: pl.DataFrame, config: SimulationConfig = DEFAULT_CONFIG) -> list[list[dict]]:
    """The records of each payload, as the simulator's files would hold them, in order."""
    lines = _payload_lines(messages, config.file_minutes)
    grouped = lines.group_by("window", maintain_order=True).agg("record").sort("window")
    return [[json.loads(r) for r in records] for records in grouped["record"]]


def encode(records: list[dict], fmt: PushFormat) -> tuple[bytes, str]:
    if fmt == "avro":
        return avro_schema.encode_single_objects([avro_schema.from_json_record(r) for r in records]), "application/avro"
    return json.dumps({"EVChargingEvents": records}).encode("utf-8"), "application/json"


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and (
        exc.response.status_code == 429 or exc.response.status_code >= 500
    )


@retry(
    retry=retry_if_exception(_transient),
    wait=wait_exponential(multiplier=0.2, max=10),
    stop=stop_after_attempt(8),
    reraise=True,
)
def _post(client: httpx.Client, url: str, body: bytes, content_type: str) -> httpx.Response:
    answer = client.post(url, content=body, headers={"Content-Type": content_type})
    if answer.status_code == 429 or answer.status_code >= 500:
        answer.raise_for_status()
    if answer.status_code >= 400:
        raise PushRefused(f"{url} answered {answer.status_code}: {answer.text[:300]}")
    return answer


def push_feed(
    messages: pl.DataFrame,
    url: str,
    *,
    fmt: PushFormat = "json",
    token: str | None = None,
    config: SimulationConfig = DEFAULT_CONFIG,
    verify: bool | str = True,
    client: httpx.Client | None = None,
) -> PushSummary:
    """POST one payload per simulated file window to `url` (the receiver's /ev-charging-events)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    own = client is None
    client = client or httpx.Client(headers=headers, timeout=30, verify=verify)
    started = time.perf_counter()
    count = sent = 0
    try:
        for records in payloads(messages, config):
            body, content_type = encode(records, fmt)
            _post(client, url, body, content_type)
            count += 1
            sent += len(records)
    finally:
        if own:
            client.close()
    return PushSummary(payloads=count, messages=sent, seconds=time.perf_counter() - started)
