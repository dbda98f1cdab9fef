"""The receiver's ASGI app.

`POST /ev-charging-events` (bearer token):
- `Content-Type: application/json`: the spec's payload `{"EVChargingEvents": [...]}`, kept exactly
  as received (the feed's own envelope rules decide: a trailing comma is repaired later, as for any
  landing file);
- `Content-Type: application/avro` or `avro/binary`: an Avro object container file, or one or more
  single-object encoded `EVAwarenessCollection` records; stored as the JSON payload (Avro field
  names kept, times ISO-8601 UTC with milliseconds, numbers as JSON numbers).

Answers (JSON bodies `{"error": ...}` for refusals):
- 202 `{"file": name, "records": n}` once the payload is durable in the landing folder;
- 400 malformed envelope (not JSON, no `EVChargingEvents` list, undecodable Avro): nothing written;
- 401 no or unknown bearer token; 413 body over EV_RECEIVER_MAX_BYTES; 415 other content types;
  429 over the token's rate (Retry-After says when to try again).
Record-level problems are the feed contract's business: nothing is judged at the door.

`GET /health` (no auth): 200 while the landing folder is writable. `GET /metrics` (auth): counters
in the Prometheus text format (JSON with `Accept: application/json`).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ev_assets.core import avro_schema, feed
from ev_assets.receiver import auth, landing

JSON_TYPES = ("application/json", "text/json")
AVRO_TYPES = ("application/avro", "avro/binary", "application/vnd.apache.avro+binary", "application/octet-stream+avro")
REFUSAL_REASONS = (
    "unauthorized",
    "rate_limited",
    "too_large",
    "unsupported_media_type",
    "not_json",
    "no_events_list",
    "undecodable_avro",
    "write_failed",
)


@dataclass(frozen=True)
class ReceiverConfig:
    landing_dir: Path
    token_hashes: frozenset[str]
    max_bytes: int = 10_000_000
    rate_per_s: float = 50.0
    rate_burst: float = 100.0

    @classmethod
    def from_settings(cls, settings=None) -> ReceiverConfig:
        from ev_assets.settings import Settings

        s = settings or Settings()
        return cls(
            landing_dir=Path(s.feed_dir),
            token_hashes=s.receiver_token_hashes,
            max_bytes=s.receiver_max_bytes,
            rate_per_s=s.receiver_rate_per_s,
            rate_burst=s.receiver_rate_burst,
        )


@dataclass
class Counters:
    payloads: int = 0
    records: int = 0
    bytes: int = 0
    refused: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self, records: int, size: int) -> None:
        with self._lock:
            self.payloads += 1
            self.records += records
            self.bytes += size

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1

    def as_dict(self) -> dict:
        with self._lock:
            return {
                "received_payloads": self.payloads,
                "received_records": self.records,
                "received_bytes": self.bytes,
                "refused": {reason: self.refused.get(reason, 0) for reason in REFUSAL_REASONS},
            }

    def prometheus(self) -> str:
        d = self.as_dict()
        lines = [
            "# HELP ev_receiver_payloads_total Payloads acknowledged (durable in the landing folder).",
            "# TYPE ev_receiver_payloads_total counter",
            f"ev_receiver_payloads_total {d['received_payloads']}",
            "# HELP ev_receiver_records_total Records in acknowledged payloads.",
            "# TYPE ev_receiver_records_total counter",
            f"ev_receiver_records_total {d['received_records']}",
            "# HELP ev_receiver_bytes_total Request bytes of acknowledged payloads.",
            "# TYPE ev_receiver_bytes_total counter",
            f"ev_receiver_bytes_total {d['received_bytes']}",
            "# HELP ev_receiver_refused_total Requests refused, by reason.",
            "# TYPE ev_receiver_refused_total counter",
            *(f'ev_receiver_refused_total{{reason="{r}"}} {n}' for r, n in d["refused"].items()),
        ]
        return "\n".join(lines) + "\n"


class Refused(Exception):
    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or {}


def create_app(config: ReceiverConfig) -> Starlette:
    counters = Counters()
    buckets = auth.TokenBuckets(config.rate_per_s, config.rate_burst)

    def refusal(exc: Refused) -> JSONResponse:
        counters.refuse(exc.reason)
        return JSONResponse({"error": exc.reason, "detail": exc.message}, status_code=exc.status, headers=exc.headers)

    def authenticate(request: Request) -> str:
        token = auth.bearer_token(request.headers.get("authorization"))
        matched = auth.known_hash(token, config.token_hashes) if token else None
        if matched is None:
            raise Refused(
                401,
                "unauthorized",
                "a bearer token is required" if token is None else "unknown bearer token",
                {"WWW-Authenticate": 'Bearer realm="ev-awareness"'},
            )
        return matched

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_bytes:
            raise Refused(413, "too_large", f"the body ({int(declared):,} bytes) exceeds {config.max_bytes:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_bytes:
                raise Refused(413, "too_large", f"the body exceeds {config.max_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def payload_file(media_type: str, body: bytes) -> tuple[bytes, int]:
        """(the landing file's content, its record count); Refused when the envelope is malformed."""
        if media_type in JSON_TYPES:
            parsed = feed.parse_payload("push", body)
            if parsed.quarantined:
                reason = "no_events_list" if parsed.error.startswith("wrong top-level shape") else "not_json"
                raise Refused(400, reason, parsed.error)
            return body, len(parsed.records)
        try:
            records = avro_schema.decode(body)
        except avro_schema.AvroPayloadError as exc:
            raise Refused(400, "undecodable_avro", str(exc)) from exc
        return avro_schema.to_json_payload(records), len(records)

    async def receive(request: Request) -> Response:
        try:
            token = authenticate(request)
            wait = buckets.take(token)
            if wait:
                raise Refused(
                    429,
                    "rate_limited",
                    f"over {config.rate_per_s:g} pushes/s for this token",
                    {"Retry-After": str(max(1, round(wait + 0.5)))},
                )
            media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type not in JSON_TYPES + AVRO_TYPES:
                raise Refused(
                    415,
                    "unsupported_media_type",
                    f"Content-Type {media_type or '(none)'!r}: send application/json, application/avro or avro/binary",
                )
            body = await read_body(request)
            content, records = await run_in_threadpool(payload_file, media_type, body)
            try:
                path = await run_in_threadpool(landing.write_durably, config.landing_dir, content)
            except OSError as exc:
                raise Refused(503, "write_failed", f"the payload could not be stored: {exc}") from exc
        except Refused as exc:
            return refusal(exc)
        counters.accepted(records, len(body))
        return JSONResponse({"file": path.name, "records": records}, status_code=202)

    async def health(_request: Request) -> Response:
        ok = config.landing_dir.is_dir()
        return JSONResponse({"status": "ok" if ok else "landing folder missing"}, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        try:
            authenticate(request)
        except Refused as exc:
            return refusal(exc)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(counters.as_dict())
        return PlainTextResponse(counters.prometheus(), media_type="text/plain; version=0.0.4")

    app = Starlette(
        routes=[
            Route("/ev-charging-events", receive, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
    app.state.counters = counters
    app.state.config = config
    return app


def serve(host: str, port: int, settings=None, log_level: str = "warning") -> None:
    """Run the receiver with uvicorn (HTTPS when EV_RECEIVER_TLS_CERT and _KEY are set)."""
    import uvicorn

    from ev_assets.settings import Settings

    s = settings or Settings()
    config = ReceiverConfig.from_settings(s)
    config.landing_dir.mkdir(parents=True, exist_ok=True)
    landing.remove_stale_temporaries(config.landing_dir)
    tls = {}
    if s.receiver_tls_cert or s.receiver_tls_key:
        if not (s.receiver_tls_cert and s.receiver_tls_key):
            raise SystemExit("EV_RECEIVER_TLS_CERT and EV_RECEIVER_TLS_KEY go together")
        tls = {"ssl_certfile": str(s.receiver_tls_cert), "ssl_keyfile": str(s.receiver_tls_key)}
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, access_log=False, **tls)
