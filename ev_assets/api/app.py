"""The events API: `GET /v1/ev-charging-events` in the spec's payload shape, and a stream of new events.

Read-only: every query is a SQLAlchemy Core select with bound parameters. Pages are ordered by
message_id (the primary key, stable); the stream is ordered by (commit_seq, message_id), the commit
order of ev_event_commits, so a consumer resuming with its cursor sees no gap and no repeat.
"""

import base64
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import polars as pl
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from ev_assets import tokens
from ev_assets.api.spec_shape import SPEC_SOURCE_COLUMNS, json_objects, spec_records
from ev_assets.warehouse.store import Warehouse, rows_to_frame
from ev_assets.warehouse.tables import (
    EV_BATCHES_PENDING,
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    EV_EVENT_COMMITS,
    FEEDER_DAILY_LOAD,
    FEEDER_INTERVAL_LOAD,
    SUBSTATION_DAILY_LOAD,
    SUBSTATION_INTERVAL_LOAD,
    TRANSFORMER_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
    UTC_DATETIME,
)

NDJSON = "application/x-ndjson"
STREAM_CHUNK = 500  # records per chunk of a streamed response
PARQUET = "application/vnd.apache.parquet"

# The spec's EntityType -> the event column its EntityId is read against.
ENTITY_COLUMNS = {
    "Meter": "meter_id",
    "ServicePoint": "service_point_id",
    "Premise": "premise_id",
    "ESN": "esn",
    "Transformer": "transformer_id",
}
# Sessions carry the same identity columns but the ESN.
SESSION_ENTITY_COLUMNS = {k: v for k, v in ENTITY_COLUMNS.items() if k != "ESN"}
GROUP_COLUMNS = {"Feeder": "feeder_id", "Substation": "substation_id"}


class Problem(BaseModel):
    detail: str | list[dict[str, Any]]


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
    duration_unit: str = "hours"  # of the reported ChargeDuration: an unpaired end's start is end - duration

    @classmethod
    def from_settings(cls, settings=None) -> "ApiConfig":
        from ev_assets.settings import Settings

        s = settings or Settings()
        return cls(
            s.warehouse_url, parse_keys(s.api_key_sha256s), s.api_max_entity_ids, s.api_page_size_max, s.duration_unit
        )


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
    # In UTC: SQLite keeps naive UTC text, and a bound aware value would be written as its wall time.
    return parsed.astimezone(UTC)


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


def _key_value(value, sql_type):
    """A cursor's key value as its column's type (timestamps and dates travel as ISO text)."""
    try:
        if isinstance(sql_type, sa.DateTime):
            return datetime.fromisoformat(value).astimezone(UTC)
        if isinstance(sql_type, sa.Date):
            return date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "the cursor is not one this API gave out: pass X-Next-Cursor unchanged") from exc
    if not isinstance(value, str):
        raise ApiError(400, "the cursor is not one this API gave out: pass X-Next-Cursor unchanged")
    return value


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


def _no_nul_characters(request: Request) -> None:
    """PostgreSQL text cannot hold NUL: a parameter with one is refused before any query (a 500 before;
    schemathesis found it)."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise ApiError(422, f"{name} contains a NUL character (%00): no id or value of this API has one")


def create_app(config: ApiConfig) -> FastAPI:
    warehouse = Warehouse(config.warehouse_url)
    problem = {"model": Problem, "description": "A refusal, with a sentence saying what to do"}
    app = FastAPI(
        title="EV Awareness events API",
        version="1",
        description="The spec's EV charging events, sessions and load, from the warehouse (read-only).",
        # Every refusal has one shape ({"detail": ...}): declared so, the schema holds for them too.
        responses={status: problem for status in (400, 401, 403, 422)},
        dependencies=[Depends(_no_nul_characters)],
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
    sessions = warehouse.table(EV_CHARGING_SESSIONS)
    pending = warehouse.table(EV_BATCHES_PENDING)
    duration_s = {"hours": 3600.0, "minutes": 60.0, "seconds": 1.0}[config.duration_unit]

    def minus_duration(end_time, duration):
        """end_time - the reported duration: the start of an end whose start is not paired (yet)."""
        if warehouse.dialect == "sqlite":  # naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'; %f gives milliseconds
            shifted = sa.func.strftime(
                "%Y-%m-%d %H:%M:%f", end_time, "-" + sa.cast(duration * duration_s, sa.Text) + " seconds"
            )
            return sa.type_coerce(shifted + "000", sa.DateTime(timezone=True))
        return end_time - sa.func.make_interval(0, 0, 0, 0, 0, 0, duration * duration_s)

    def in_window(column, first, last) -> list:
        return [*([column >= first] if first else []), *([column < last] if last else [])]

    def date_bounds(column, first, last) -> list:
        """A sargable day range around a time window: a day either side covers any UTC offset."""
        return [
            *([column >= (first - timedelta(days=1)).date()] if first else []),
            *([column <= (last + timedelta(days=1)).date()] if last else []),
        ]

    def event_time_ids(f: Filters) -> sa.CompoundSelect:
        """The message ids whose event time (the session's start, as the spec says) lies in the window:
        a paired start or end by its session's start; an end_only session's end, and an end of a batch not
        paired yet, by its end time minus its reported duration; a start of a batch not paired yet by its
        own time."""
        first, last = f.start_event, f.end_event
        # Paired messages through their sessions, found by the sessions' (transformer_id, event_date) or
        # event_date index: the session's own entity and group columns narrow it (the event's own columns
        # are checked again by the outer query).
        narrow = []
        if f.entity_type in SESSION_ENTITY_COLUMNS and f.entity_ids:
            narrow.append(sessions.c[SESSION_ENTITY_COLUMNS[f.entity_type]].in_(f.entity_ids))
        if f.group_type is not None:
            narrow.append(sessions.c[GROUP_COLUMNS[f.group_type]] == f.group_id)
        started = [
            sessions.c.start_time.is_not(None),
            *in_window(sessions.c.start_time, first, last),
            *date_bounds(sessions.c.event_date, first, last),
            *narrow,
        ]
        paired_starts = sa.select(sessions.c.start_message_id).where(*started)
        paired_ends = sa.select(sessions.c.end_message_id).where(*started, sessions.c.end_message_id.is_not(None))
        # end_only: event_date is the end's day, never before the estimated start's.
        lone_ends = sa.select(sessions.c.end_message_id).where(
            sessions.c.status == "end_only",
            sessions.c.start_time.is_(None),
            *date_bounds(sessions.c.event_date, first, None),
            *in_window(minus_duration(sessions.c.end_time, sessions.c.reported_duration), first, last),
        )
        # Ends of batches not paired yet: the (short) list of those batches read first, so each is found by
        # the events' batch_id index (a join from ev_batches_pending let SQLite scan the events instead).
        with warehouse.engine.connect() as conn:
            waiting = conn.execute(sa.select(pending.c.batch_id)).scalars().all()
        event_time = sa.case(
            (events.c.message_type == "start", events.c.message_time),
            else_=minus_duration(events.c.message_time, events.c.charge_duration),
        )
        unpaired = sa.select(events.c.message_id).where(
            events.c.batch_id.in_(waiting) if waiting else sa.false(), *in_window(event_time, first, last)
        )
        return sa.union(paired_starts, paired_ends, lone_ends, unpaired)

    def where(f: Filters) -> list:
        c = events.c
        clauses = []
        if f.entity_type is not None and f.entity_ids:
            clauses.append(c[ENTITY_COLUMNS[f.entity_type]].in_(f.entity_ids))
        if f.group_type is not None:
            clauses.append(c[GROUP_COLUMNS[f.group_type]] == f.group_id)
        if f.start_event is not None or f.end_event is not None:
            clauses.append(c.message_id.in_(event_time_ids(f)))
        clauses += in_window(c.received_time, f.start_received, f.end_received)
        return clauses

    # What a page reads of the events: the key it orders and resumes by, and the spec's record.
    page_columns = ("message_id", *SPEC_SOURCE_COLUMNS)

    def page(f: Filters, cursor: str | None) -> tuple[pl.DataFrame, str | None]:
        query = (
            sa.select(*warehouse.stored_columns(EV_CHARGING_EVENTS, page_columns))
            .where(*where(f))
            .order_by(events.c.message_id)
            .limit(f.page_size + 1)
        )
        if cursor:
            (after,) = _decode(cursor, 1)
            query = query.where(events.c.message_id > after)
        with warehouse.engine.connect() as conn:
            rows = warehouse.query_frame(EV_CHARGING_EVENTS, query, conn, page_columns)
        more = rows.height > f.page_size
        rows = rows.head(f.page_size)
        return spec_records(rows), _encode([rows["message_id"][-1]]) if more and rows.height else None

    @app.get("/v1/ev-charging-events", summary="The spec's EV charging events, a page at a time")
    def list_events(f: Annotated[Filters, Depends(filters)], Cursor: str | None = None):  # noqa: N803
        records, next_cursor = page(f, Cursor)

        def body():
            # Streamed in chunks of records, not one string of the whole page; not one chunk per record
            # either: each chunk of a sync generator costs a hop to the thread pool (half the time of a
            # 1,000-event page when it was per record).
            yield '{"EVChargingEvents": ['
            for n in range(0, records.height, STREAM_CHUNK):
                yield ("," if n else "") + json_objects(records.slice(n, STREAM_CHUNK))
            yield "], " + f'"next_cursor": {json.dumps(next_cursor)}' + "}"

        return StreamingResponse(body(), media_type="application/json")

    def committed_after(f: Filters, seq: int, after_id: str) -> pl.DataFrame:
        """The next page of events in commit order after (seq, after_id): page_columns and commit_seq."""
        query = (
            sa.select(*warehouse.stored_columns(EV_CHARGING_EVENTS, page_columns), commits.c.commit_seq)
            .join(commits, commits.c.batch_id == events.c.batch_id)
            .where(*where(f))
            .where(
                sa.tuple_(commits.c.commit_seq, events.c.message_id) > sa.tuple_(sa.literal(seq), sa.literal(after_id))
            )
            .order_by(commits.c.commit_seq, events.c.message_id)
            .limit(f.page_size)
        )
        with warehouse.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = rows_to_frame(EV_CHARGING_EVENTS, [row[:-1] for row in rows], page_columns)
        return frame.with_columns(commit_seq=pl.Series([row[-1] for row in rows], dtype=pl.Int64))

    def cursors(rows: pl.DataFrame) -> list[str]:
        """Each row's resume point in commit order."""
        return [_encode([seq, message_id]) for seq, message_id in rows.select("commit_seq", "message_id").rows()]

    @app.get(
        "/v1/ev-charging-events/stream",
        summary="Events in commit order: long poll with a cursor, or newline-delimited JSON",
        responses={200: {"content": {"application/json": {}, NDJSON: {}}}},
    )
    def stream(
        request: Request,
        f: Annotated[Filters, Depends(filters)],
        Cursor: str | None = None,  # noqa: N803
        WaitSeconds: Annotated[float, Query(ge=0, le=60)] = 0,  # noqa: N803
        format: Annotated[Literal["json", "ndjson"] | None, Query(description="ndjson: one line per event")] = None,  # noqa: A002
    ):
        """Events committed after the cursor (from the first commit without one), in commit order. With
        WaitSeconds, waits up to that long for the first new event. next_cursor resumes exactly after the
        last event returned: no gap, no repeat.

        Newline-delimited JSON (`Accept: application/x-ndjson` or `format=ndjson`): one line per event,
        `{"cursor": ..., "event": {...}}`, each line's cursor resuming right after it; the response
        follows new commits until WaitSeconds pass without one (0: ends at the last committed event)."""
        seq, after_id = _decode(Cursor, 2) if Cursor else (0, "")
        if format == "ndjson" or (format is None and NDJSON in request.headers.get("accept", "")):
            return StreamingResponse(follow(f, int(seq), str(after_id), WaitSeconds), media_type=NDJSON)
        deadline = time.monotonic() + WaitSeconds
        while True:
            rows = committed_after(f, int(seq), str(after_id))
            if rows.height or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        next_cursor = cursors(rows.tail(1))[0] if rows.height else (Cursor or _encode([0, ""]))
        return {"EVChargingEvents": spec_records(rows).to_dicts(), "next_cursor": next_cursor}

    def follow(f: Filters, seq: int, after_id: str, wait_seconds: float):
        """Pages in commit order until wait_seconds pass with nothing new; each line carries its own cursor,
        so a consumer cut off mid-response resumes after the last line it read."""
        idle_since = time.monotonic()
        while True:
            rows = committed_after(f, seq, after_id)
            if rows.height:  # one chunk per page (each chunk costs a thread-pool hop), each line its own cursor
                lines = spec_records(rows).write_ndjson().splitlines()
                yield "".join(
                    f'{{"cursor": {json.dumps(c)}, "event": {line}}}\n'
                    for c, line in zip(cursors(rows), lines, strict=True)
                )
                seq, after_id = rows["commit_seq"][-1], rows["message_id"][-1]
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= wait_seconds:
                return
            else:
                time.sleep(0.25)

    # --- sessions and load: the same filters, as json, csv or parquet --------------------------

    def frame_response(spec, frame: pl.DataFrame, next_cursor: str | None, fmt: str, name: str):
        headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
        if fmt == "parquet":
            buffer = io.BytesIO()
            frame.write_parquet(buffer)
            return Response(buffer.getvalue(), media_type=PARQUET, headers=headers)
        if fmt == "csv":
            return Response(frame.write_csv(), media_type="text/csv; charset=utf-8", headers=headers)
        as_text = frame.with_columns(
            [pl.col(n).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ") for n, t in frame.schema.items() if t == UTC_DATETIME]
            + [pl.col(n).cast(pl.String) for n, t in frame.schema.items() if t == pl.Date]
        )
        return JSONResponse({name: as_text.to_dicts(), "next_cursor": next_cursor}, headers=headers)

    def frame_page(spec, key_columns: tuple[str, ...], clauses: list, cursor: str | None, page_size: int, joins=None):
        """One page of `spec` in primary-key order, after the cursor (the last row's key)."""
        table = warehouse.table(spec)
        keys = [table.c[k] for k in key_columns]
        query = sa.select(*warehouse.stored_columns(spec))
        if joins is not None:
            query = query.select_from(joins)
        if cursor:
            after = _decode(cursor, len(keys))
            bound = [sa.literal(_key_value(v, k.type), k.type) for v, k in zip(after, keys, strict=True)]
            clauses = [*clauses, sa.tuple_(*keys) > sa.tuple_(*bound)]
        query = query.where(*clauses).order_by(*keys).limit(page_size + 1)
        frame = warehouse.query_frame(spec, query, None, None)
        more = frame.height > page_size
        frame = frame.head(page_size)
        if not more:
            return frame, None
        last = (
            frame.select(key_columns)
            .tail(1)
            .with_columns(
                [
                    pl.col(n).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
                    for n, t in frame.schema.items()
                    if n in key_columns and t == UTC_DATETIME
                ]
                + [pl.col(n).cast(pl.String) for n, t in frame.schema.items() if n in key_columns and t == pl.Date]
            )
        )
        return frame, _encode(list(last.row(0)))

    Format = Annotated[Literal["json", "csv", "parquet"], Query(description="json, csv or parquet (polars)")]

    @app.get(
        "/v1/ev-charging-sessions",
        summary="Charging sessions (paired start and end), a page at a time",
        responses={200: {"content": {"application/json": {}, "text/csv": {}, PARQUET: {}}}},
    )
    def list_sessions(
        f: Annotated[Filters, Depends(filters)],
        Cursor: str | None = None,  # noqa: N803
        format: Format = "json",  # noqa: A002
    ):
        """Event time is the session's start (an end_only session's: its end). Sessions have no received
        time: the received window does not apply."""
        if f.entity_type is not None and f.entity_type not in SESSION_ENTITY_COLUMNS:
            raise ApiError(422, f"sessions have no {f.entity_type}: use one of {', '.join(SESSION_ENTITY_COLUMNS)}")
        if f.start_received is not None or f.end_received is not None:
            raise ApiError(
                422, "sessions have no received time: filter with StartEventDateTime/EndEventDateTime instead"
            )
        c = sessions.c
        clauses = []
        if f.entity_type is not None and f.entity_ids:
            clauses.append(c[SESSION_ENTITY_COLUMNS[f.entity_type]].in_(f.entity_ids))
        if f.group_type is not None:
            clauses.append(c[GROUP_COLUMNS[f.group_type]] == f.group_id)
        if f.start_event is not None or f.end_event is not None:
            clauses += date_bounds(c.event_date, f.start_event, f.end_event)
            clauses += in_window(sa.func.coalesce(c.start_time, c.end_time), f.start_event, f.end_event)
        frame, next_cursor = frame_page(EV_CHARGING_SESSIONS, ("session_id",), clauses, Cursor, f.page_size)
        return frame_response(EV_CHARGING_SESSIONS, frame, next_cursor, format, "EVChargingSessions")

    def load_endpoint(level: str, grain: str, spec, daily_spec):
        key = f"{level}_id"
        groups = {"transformer": ("Feeder", "Substation"), "feeder": ("Substation",), "substation": ()}[level]
        entity = level.capitalize()

        def handler(
            key_: Annotated[ApiKey | None, Depends(authorised)],
            EntityType: Annotated[str | None, Query(description=f"{entity}")] = None,  # noqa: N803
            EntityId: Annotated[
                list[str] | None, Query(description=f"{entity} ids, repeated or comma-separated")
            ] = None,  # noqa: N803
            GroupType: Annotated[str | None, Query(description=" or ".join(groups) or "none at this level")] = None,  # noqa: N803
            GroupId: Annotated[str | None, Query()] = None,  # noqa: N803
            StartDate: Annotated[date | None, Query(description="Local date (EV_TIMEZONE), inclusive")] = None,  # noqa: N803
            EndDate: Annotated[date | None, Query(description="Local date, exclusive")] = None,  # noqa: N803
            PageSize: Annotated[int, Query(ge=1)] = 1000,  # noqa: N803
            Cursor: str | None = None,  # noqa: N803
            format: Format = "json",  # noqa: A002
        ):
            if key_ is not None and key_.entity_types is not None and entity not in key_.entity_types:
                raise ApiError(403, f"this API key may only ask for EntityType {', '.join(sorted(key_.entity_types))}")
            if EntityType is not None and EntityType != entity:
                raise ApiError(422, f"EntityType={EntityType!r}: this endpoint's entities are {entity}s")
            ids = [part.strip() for value in EntityId or [] for part in value.split(",") if part.strip()]
            if EntityId is not None and not ids:
                raise ApiError(422, "EntityId is empty: give at least one id, or leave the parameter out")
            if len(ids) > config.max_entity_ids:
                raise ApiError(
                    422, f"{len(ids)} EntityId values exceed the maximum of {config.max_entity_ids}: split the request"
                )
            if (GroupType is None) != (GroupId is None):
                raise ApiError(422, "GroupType and GroupId go together (e.g. GroupType=Substation&GroupId=S1)")
            if GroupType is not None and GroupType not in groups:
                raise ApiError(
                    422, f"GroupType={GroupType!r} does not apply to {level} load: use {' or '.join(groups) or 'none'}"
                )
            if StartDate is not None and EndDate is not None and EndDate <= StartDate:
                raise ApiError(422, "EndDate must be after StartDate (the window is start inclusive, end exclusive)")
            if PageSize > config.page_size_max:
                raise ApiError(422, f"PageSize={PageSize} exceeds the maximum of {config.page_size_max}")
            table = warehouse.table(spec)
            clauses = [*([table.c[key].in_(ids)] if ids else [])]
            clauses += [
                *([table.c.load_date >= StartDate] if StartDate else []),
                *([table.c.load_date < EndDate] if EndDate else []),
            ]
            joins = None
            if GroupType is not None:
                group_column = GROUP_COLUMNS[GroupType]
                if group_column in table.c:
                    clauses.append(table.c[group_column] == GroupId)
                else:  # the 15-minute rows: the hierarchy of their day, from the daily row
                    daily = warehouse.table(daily_spec)
                    joins = table.join(
                        daily, sa.and_(daily.c[key] == table.c[key], daily.c.load_date == table.c.load_date)
                    )
                    clauses.append(daily.c[group_column] == GroupId)
            order = (key, "load_date") if grain == "daily" else (key, "interval_start")
            frame, next_cursor = frame_page(spec, order, clauses, Cursor, PageSize, joins)
            return frame_response(spec, frame, next_cursor, format, "rows")

        app.get(
            f"/v1/{level}-load/{grain}",
            summary=f"{entity} EV load {'per day' if grain == 'daily' else 'per 15 minutes'}: {spec.name}",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, PARQUET: {}}}},
            name=f"{level}_load_{grain}",
        )(handler)

    for level, daily_spec, interval_spec in (
        ("transformer", TRANSFORMER_DAILY_LOAD, TRANSFORMER_INTERVAL_LOAD),
        ("feeder", FEEDER_DAILY_LOAD, FEEDER_INTERVAL_LOAD),
        ("substation", SUBSTATION_DAILY_LOAD, SUBSTATION_INTERVAL_LOAD),
    ):
        load_endpoint(level, "daily", daily_spec, daily_spec)
        load_endpoint(level, "15min", interval_spec, daily_spec)

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
