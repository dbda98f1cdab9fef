"""The events API: `GET /v1/ev-charging-events` in the spec's payload shape, and a stream of new events.

Read-only: every query is a SQLAlchemy Core select with bound parameters. Pages are ordered by
message_id (the primary key, stable); the stream is ordered by (commit_seq, message_id), the commit
order of ev_event_commits, so a consumer resuming with its cursor sees no gap and no repeat.
"""

import base64
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ev_assets import tokens
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_EVENTS, EV_EVENT_COMMITS

# The spec's EntityType -> the event column its EntityId is read against.
ENTITY_COLUMNS = {
    "Meter": "meter_id",
    "ServicePoint": "service_point_id",
    "Premise": "premise_id",
    "ESN": "esn",
    "Transformer": "transformer_id",
}
GROUP_COLUMNS = {"Feeder": "feeder_id", "Substation": "substation_id"}
SPEC_FIELDS = (
    "ServicePointID",
    "MeterID",
    "MeterNumber",
    "ESN",
    "TransformerID",
    "PremiseID",
    "ReceivedTime",
    "ChargeStartTime",
    "ChargeEndTime",
    "ChargeW",
    "ChargeDuration",
    "ChargeEnergy",
)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class ApiKey:
    sha256: str
    entity_types: frozenset[str] | None  # None: every type


def parse_keys(text: str) -> dict[str, ApiKey]:
    keys = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        digest, _, types = item.partition(":")
        allowed = frozenset(t for t in types.split("|") if t) or None
        unknown = (allowed or frozenset()) - ENTITY_COLUMNS.keys()
        if unknown:
            raise ValueError(f"EV_API_KEY_SHA256S: unknown entity types {sorted(unknown)}")
        keys[digest.lower()] = ApiKey(digest.lower(), allowed)
    return keys


@dataclass(frozen=True)
class ApiConfig:
    warehouse_url: str
    keys: dict[str, ApiKey]
    max_entity_ids: int = 1000
    page_size_max: int = 10_000

    @classmethod
    def from_settings(cls, settings=None) -> "ApiConfig":
        from ev_assets.settings import Settings

        s = settings or Settings()
        return cls(s.warehouse_url, parse_keys(s.api_key_sha256s), s.api_max_entity_ids, s.api_page_size_max)


def _number(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _time(value: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a Z, as the spec's example."""
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def spec_record(row) -> dict[str, str | None]:
    """One event in the spec's shape: its field names, numbers as strings, the other message type's fields null."""
    return {
        "ServicePointID": row.service_point_id,
        "MeterID": row.meter_id,
        "MeterNumber": row.meter_number,
        "ESN": row.esn,
        "TransformerID": row.transformer_id,
        "PremiseID": row.premise_id,
        "ReceivedTime": _time(row.received_time),
        "ChargeStartTime": _time(row.charge_start_time),
        "ChargeEndTime": _time(row.charge_end_time),
        "ChargeW": _number(row.charge_w),
        "ChargeDuration": _number(row.charge_duration),
        "ChargeEnergy": _number(row.charge_energy_wh),
    }


def _date_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ApiError(422, f"{name}={value!r} is not an ISO 8601 date-time, e.g. 2024-06-03T18:00:00Z") from exc
    if parsed.tzinfo is None:
        raise ApiError(
            422,
            f"{name}={value!r} has no UTC offset: the spec asks for one, e.g. 2024-06-03T18:00:00Z or "
            "2024-06-03T14:00:00-04:00",
        )
    return parsed


def _encode(payload: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode(cursor: str, length: int) -> list:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(payload, list) and len(payload) == length:
            return payload
    except (ValueError, TypeError):
        pass
    raise ApiError(
        400, "the cursor is not one this API gave out: pass the next_cursor of a previous response unchanged"
    )


@dataclass
class Filters:
    entity_type: str | None
    entity_ids: list[str]
    group_type: str | None
    group_id: str | None
    start_event: datetime | None
    end_event: datetime | None
    start_received: datetime | None
    end_received: datetime | None
    page_size: int


def create_app(config: ApiConfig) -> FastAPI:
    warehouse = Warehouse(config.warehouse_url)
    app = FastAPI(
        title="EV Awareness events API",
        version="1",
        description="The spec's EV charging events, from the warehouse (read-only).",
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": 'Bearer realm="ev-awareness"'} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    def authorised(request: Request) -> ApiKey | None:
        if not config.keys:
            return None
        token = tokens.bearer_token(request.headers.get("authorization"))
        matched = tokens.known_hash(token, frozenset(config.keys)) if token else None
        if matched is None:
            raise ApiError(
                401, "send a valid API key as `Authorization: Bearer <key>`" if token is None else "unknown API key"
            )
        return config.keys[matched]

    def filters(
        key: Annotated[ApiKey | None, Depends(authorised)],
        EntityType: Annotated[str | None, Query(description="Meter, ServicePoint, Premise, ESN or Transformer")] = None,  # noqa: N803
        EntityId: Annotated[list[str] | None, Query(description="Repeated or comma-separated")] = None,  # noqa: N803
        GroupType: Annotated[str | None, Query(description="Feeder or Substation")] = None,  # noqa: N803
        GroupId: Annotated[str | None, Query()] = None,  # noqa: N803
        StartEventDateTime: Annotated[str | None, Query(description="Inclusive, with a UTC offset")] = None,  # noqa: N803
        EndEventDateTime: Annotated[str | None, Query(description="Exclusive, with a UTC offset")] = None,  # noqa: N803
        StartReceivedDateTime: Annotated[str | None, Query(description="Inclusive, with a UTC offset")] = None,  # noqa: N803
        EndReceivedDateTime: Annotated[str | None, Query(description="Exclusive, with a UTC offset")] = None,  # noqa: N803
        PageSize: Annotated[int, Query(ge=1)] = 1000,  # noqa: N803
    ) -> Filters:
        if EntityType is not None and EntityType not in ENTITY_COLUMNS:
            raise ApiError(422, f"EntityType={EntityType!r} is unknown: use one of {', '.join(ENTITY_COLUMNS)}")
        ids = [part.strip() for value in EntityId or [] for part in value.split(",") if part.strip()]
        if EntityId is not None and EntityType is None:
            raise ApiError(422, "EntityId needs an EntityType saying what the ids are (e.g. EntityType=Meter)")
        if EntityId is not None and not ids:
            raise ApiError(422, "EntityId is empty: give at least one id, or leave the parameter out")
        if len(ids) > config.max_entity_ids:
            raise ApiError(
                422, f"{len(ids)} EntityId values exceed the maximum of {config.max_entity_ids}: split the request"
            )
        if key is not None and key.entity_types is not None and EntityType not in key.entity_types:
            raise ApiError(403, f"this API key may only ask for EntityType {', '.join(sorted(key.entity_types))}")
        if (GroupType is None) != (GroupId is None):
            raise ApiError(422, "GroupType and GroupId go together (e.g. GroupType=Feeder&GroupId=F1)")
        if GroupType is not None and GroupType not in GROUP_COLUMNS:
            raise ApiError(422, f"GroupType={GroupType!r} is unknown: use Feeder or Substation")
        if PageSize > config.page_size_max:
            raise ApiError(422, f"PageSize={PageSize} exceeds the maximum of {config.page_size_max}")
        windows = []
        for start_name, start, end_name, end in (
            ("StartEventDateTime", StartEventDateTime, "EndEventDateTime", EndEventDateTime),
            ("StartReceivedDateTime", StartReceivedDateTime, "EndReceivedDateTime", EndReceivedDateTime),
        ):
            first, last = _date_time(start_name, start), _date_time(end_name, end)
            if first is not None and last is not None and last <= first:
                raise ApiError(
                    422, f"{end_name} must be after {start_name} (the window is start inclusive, end exclusive)"
                )
            windows += [first, last]
        return Filters(EntityType, ids, GroupType, GroupId, *windows, PageSize)

    events = warehouse.table(EV_CHARGING_EVENTS)
    commits = warehouse.table(EV_EVENT_COMMITS)

    def where(f: Filters) -> list:
        c = events.c
        clauses = []
        if f.entity_type is not None and f.entity_ids:
            clauses.append(c[ENTITY_COLUMNS[f.entity_type]].in_(f.entity_ids))
        if f.group_type is not None:
            clauses.append(c[GROUP_COLUMNS[f.group_type]] == f.group_id)
        # Event time is the time the message reports (a start's ChargeStartTime, an end's ChargeEndTime).
        for column, first, last in (
            (c.message_time, f.start_event, f.end_event),
            (c.received_time, f.start_received, f.end_received),
        ):
            if first is not None:
                clauses.append(column >= first)
            if last is not None:
                clauses.append(column < last)
        return clauses

    def page(f: Filters, cursor: str | None) -> tuple[list[dict], str | None]:
        query = sa.select(events).where(*where(f)).order_by(events.c.message_id).limit(f.page_size + 1)
        if cursor:
            (after,) = _decode(cursor, 1)
            query = query.where(events.c.message_id > after)
        with warehouse.engine.connect() as conn:
            rows = conn.execute(query).all()
        more = len(rows) > f.page_size
        rows = rows[: f.page_size]
        return [spec_record(r) for r in rows], _encode([rows[-1].message_id]) if more and rows else None

    @app.get("/v1/ev-charging-events", summary="The spec's EV charging events, a page at a time")
    def list_events(f: Annotated[Filters, Depends(filters)], Cursor: str | None = None):  # noqa: N803
        records, next_cursor = page(f, Cursor)

        def body():  # streamed: one record at a time, not one string of the whole page
            yield '{"EVChargingEvents": ['
            for n, record in enumerate(records):
                yield ("," if n else "") + json.dumps(record)
            yield "], " + f'"next_cursor": {json.dumps(next_cursor)}' + "}"

        return StreamingResponse(body(), media_type="application/json")

    def committed_after(f: Filters, seq: int, after_id: str) -> list:
        query = (
            sa.select(commits.c.commit_seq, events)
            .join(commits, commits.c.batch_id == events.c.batch_id)
            .where(*where(f))
            .where(
                sa.tuple_(commits.c.commit_seq, events.c.message_id) > sa.tuple_(sa.literal(seq), sa.literal(after_id))
            )
            .order_by(commits.c.commit_seq, events.c.message_id)
            .limit(f.page_size)
        )
        with warehouse.engine.connect() as conn:
            return conn.execute(query).all()

    @app.get("/v1/ev-charging-events/stream", summary="Events in commit order, long poll with a cursor")
    def stream(
        f: Annotated[Filters, Depends(filters)],
        Cursor: str | None = None,  # noqa: N803
        WaitSeconds: Annotated[float, Query(ge=0, le=60)] = 0,  # noqa: N803
    ):
        """Events committed after the cursor (from the first commit without one), in commit order. With
        WaitSeconds, waits up to that long for the first new event. next_cursor resumes exactly after the
        last event returned: no gap, no repeat."""
        seq, after_id = _decode(Cursor, 2) if Cursor else (0, "")
        deadline = time.monotonic() + WaitSeconds
        while True:
            rows = committed_after(f, int(seq), str(after_id))
            if rows or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        next_cursor = _encode([rows[-1].commit_seq, rows[-1].message_id]) if rows else (Cursor or _encode([0, ""]))
        return {"EVChargingEvents": [spec_record(r) for r in rows], "next_cursor": next_cursor}

    @app.get("/health", summary="The process answers")
    def health():
        return {"status": "ok"}

    @app.get("/ready", summary="The warehouse answers and has the code's schema")
    def ready():
        try:
            warehouse.check_schema()
            with warehouse.engine.connect() as conn:
                conn.execute(sa.select(sa.literal(1)))
        except Exception as exc:  # noqa: BLE001  (any failure means not ready; say which)
            return JSONResponse({"status": "not ready", "detail": str(exc)[:500]}, status_code=503)
        return {"status": "ready"}

    app.state.warehouse = warehouse
    return app


def serve(host: str, port: int, settings=None, log_level: str = "warning") -> None:
    """Run the API with uvicorn. Without API keys it serves 127.0.0.1 only (the demo) and says so."""
    import sys

    import uvicorn

    config = ApiConfig.from_settings(settings)
    if not config.keys:
        if host != "127.0.0.1":
            raise SystemExit(f"refusing to serve {host} without API keys: set EV_API_KEY_SHA256S, or serve 127.0.0.1")
        print(
            "no API keys configured (EV_API_KEY_SHA256S): serving 127.0.0.1 only, without authentication",
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, access_log=False)
