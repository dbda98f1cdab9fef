"""An emulator of the vendor's batch-export API over a simulated feed (tests and the demo only).

- `POST /oauth2/token` (form: grant_type=client_credentials, client_id, client_secret) -> an access
  token (`expires_in` s);
- `POST /subscriptions/{subscription_id}/batch-request` (bearer token, `X-Correlation-Id` and
  `X-Subscriber-Id` headers; body `{"filetype": "Parquet|Orc|Json|Csv", "tokens": {...}}`) ->
  `{"jobId", "status": "New"}`;
- `GET /subscriptions/{subscription_id}/batch-request/{jobId}` -> status "New", then "InProgress",
  then "Success" with `downloadUrl` once `delay_s` has passed (the vendor's exports are minutes
  behind; the delay is configuration);
- `GET {downloadUrl}` -> a zip of files in the requested format.

Filters: StartEventDate/EndEventDate (the message's own time, UTC date), StartReceivedDateTime/
EndReceivedDateTime (ISO with offset, [start, end)), and comma-separated Meter, MeterNumber,
ElectronicSerialNumber, ServicePoint, Premises, Transformer (empty = not filtered). Device and
Feeder are accepted and ignored (the simulated feed carries no feeder).
"""

from __future__ import annotations

import io
import secrets
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import parse_qs

import polars as pl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ev_assets.vendor.export_files import EXTENSION, FILE_TYPES, write_export

LIST_TOKENS = {
    "Meter": "MeterID",
    "MeterNumber": "MeterNumber",
    "ElectronicSerialNumber": "ESN",
    "ServicePoint": "ServicePointID",
    "Premises": "PremiseID",
    "Transformer": "TransformerID",
}


@dataclass
class EmulatorConfig:
    client_id: str = "emulator-client"
    client_secret: str = "emulator-secret"
    delay_s: float = 2.0
    token_ttl_s: int = 3600
    rows_per_file: int = 5000


@dataclass
class _Job:
    job_id: str
    created: float
    filetype: str
    frame: pl.DataFrame


@dataclass
class _State:
    tokens: dict[str, float] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    token_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def export_frame(messages: pl.DataFrame) -> pl.DataFrame:
    """The simulator's messages as the export's rows: spec field names, typed (UTC ms, doubles)."""
    ms = pl.Datetime("ms", "UTC")
    return messages.select(
        "ServicePointID",
        "MeterID",
        "MeterNumber",
        "ESN",
        "TransformerID",
        "PremiseID",
        pl.col("ReceivedTime", "ChargeStartTime", "ChargeEndTime").cast(ms),
        pl.col("ChargeW", "ChargeDuration", "ChargeEnergy").cast(pl.Float64),
    )


def _filter(frame: pl.DataFrame, tokens: dict) -> pl.DataFrame:
    message_time = pl.coalesce("ChargeStartTime", "ChargeEndTime")
    conditions = []
    if tokens.get("StartEventDate"):
        conditions.append(message_time.dt.date() >= date.fromisoformat(tokens["StartEventDate"][:10]))
    if tokens.get("EndEventDate"):
        conditions.append(message_time.dt.date() <= date.fromisoformat(tokens["EndEventDate"][:10]))
    for key, op in (("StartReceivedDateTime", "ge"), ("EndReceivedDateTime", "lt")):
        if tokens.get(key):
            moment = datetime.fromisoformat(tokens[key].replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError(f"{key} must carry its UTC offset")
            conditions.append(getattr(pl.col("ReceivedTime"), op)(moment))
    for key, column in LIST_TOKENS.items():
        values = [v.strip() for v in str(tokens.get(key) or "").split(",") if v.strip()]
        if values:
            conditions.append(pl.col(column).is_in(values))
    return frame.filter(*conditions) if conditions else frame


def create_app(feed: pl.DataFrame, config: EmulatorConfig | None = None) -> Starlette:
    """`feed`: the export's rows (:func:`export_frame` of the simulator's messages)."""
    config = config or EmulatorConfig()
    state = _State()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def authorized(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with state.lock:
            expires = state.tokens.get(token.strip())
        return scheme.lower() == "bearer" and expires is not None and expires > time.time()

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return error(400, "unsupported_grant_type")
        if form.get("client_id") != config.client_id or form.get("client_secret") != config.client_secret:
            return error(401, "invalid_client")
        access = secrets.token_urlsafe(24)
        with state.lock:
            state.tokens[access] = time.time() + config.token_ttl_s
            state.token_requests += 1
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": config.token_ttl_s})

    def check_headers(request: Request) -> Response | None:
        if not authorized(request):
            return error(401, "invalid or expired bearer token")
        missing = [h for h in ("x-correlation-id", "x-subscriber-id") if not request.headers.get(h)]
        return error(400, f"missing headers: {', '.join(missing)}") if missing else None

    async def batch_request(request: Request) -> Response:
        if (refused := check_headers(request)) is not None:
            return refused
        try:
            body = await request.json()
            filetype = body.get("filetype")
            if filetype not in FILE_TYPES:
                return error(400, f"filetype must be one of {', '.join(FILE_TYPES)}")
            frame = _filter(feed, body.get("tokens") or {})
        except (ValueError, AttributeError) as exc:
            return error(400, f"bad request: {exc}")
        job = _Job(str(uuid.uuid4()), time.monotonic(), filetype, frame)
        with state.lock:
            state.jobs[job.job_id] = job
        return JSONResponse({"jobId": job.job_id, "status": "New"}, status_code=202)

    def job_of(request: Request) -> _Job | None:
        with state.lock:
            return state.jobs.get(request.path_params["job_id"])

    async def status(request: Request) -> Response:
        if (refused := check_headers(request)) is not None:
            return refused
        job = job_of(request)
        if job is None:
            return error(404, "unknown jobId")
        age = time.monotonic() - job.created
        answer = {"jobId": job.job_id, "status": "New" if age < config.delay_s / 4 else "InProgress"}
        if age >= config.delay_s:
            answer = {
                "jobId": job.job_id,
                "status": "Success",
                "downloadUrl": str(request.url_for("download", **request.path_params)),
            }
        return JSONResponse(answer)

    async def download(request: Request) -> Response:
        if not authorized(request):
            return error(401, "invalid or expired bearer token")
        job = job_of(request)
        if job is None or time.monotonic() - job.created < config.delay_s:
            return error(404, "no such export (yet)")
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for n, start in enumerate(range(0, max(job.frame.height, 1), config.rows_per_file)):
                part = job.frame.slice(start, config.rows_per_file)
                z.writestr(f"ev-charging-events-{n:05d}{EXTENSION[job.filetype]}", write_export(part, job.filetype))
        return Response(archive.getvalue(), media_type="application/zip")

    base = "/subscriptions/{subscription_id}/batch-request"
    app = Starlette(
        routes=[
            Route("/oauth2/token", token, methods=["POST"]),
            Route(base, batch_request, methods=["POST"]),
            Route(base + "/{job_id}", status, methods=["GET"]),
            Route(base + "/{job_id}/download", download, methods=["GET"], name="download"),
        ]
    )
    app.state.emulator = state
    return app


def serve(feed: pl.DataFrame, host: str, port: int, config: EmulatorConfig | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(feed, config), host=host, port=port, log_level="warning", access_log=False)
