"""Issue 13: a batch's cost follows the batch, not the warehouse's history.

The sessions step finds each meter's edge events (its last event before the pairing window, its
first after it), the sessions the window replaces, and the batches waiting for pairing. Each is
checked three ways on a small hand-made feed with long sessions across the window:
- the answers are the ones the earlier queries gave (kept here as oracles);
- the query plans seek on an index for every statement a batch sends: SQLite never scans a table
  that grows with history nor builds an automatic index over one; PostgreSQL, barred from
  sequential scans, bounds each seek on both columns of the index (on a table this small it would
  rightly scan, so what is checked is that an index can serve each statement as intended);
- the work SQLite does (virtual-machine steps, counted by its progress handler) stays the same
  when the window's meters get ten times more history: an index *range* that grows with history
  is a SEARCH in a query plan too, so the plan alone cannot tell a seek from it.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from ev_assets import pipeline
from ev_assets.core import pairing
from ev_assets.pipeline import sessions
from ev_assets.warehouse import migrate
from ev_assets.warehouse.store import IN_CHUNK, Warehouse, chunked, empty_frame, rows_to_frame
from ev_assets.warehouse.tables import (
    EV_BATCH_PAIRING,
    EV_BATCHES_PENDING,
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    EV_INGEST_BATCHES,
)

from .test_session_quality import Feed, at, end, start

# --- the queries as they were before this change: the oracles --------------------------------


def old_edge_events(warehouse, conn, window: pairing.PairingWindow) -> pl.DataFrame:
    """GROUP BY meter_id max() / min() beyond the window, joined back to the events."""
    t = warehouse.table(EV_CHARGING_EVENTS)
    frames = [empty_frame(EV_CHARGING_EVENTS, sessions.PAIRING_COLUMNS)]
    selected = [c for c in t.columns if c.name in sessions.PAIRING_COLUMNS]
    edges = (
        (sa.func.max, t.c.message_time < window.write_from, "start"),
        (sa.func.min, t.c.message_time > window.write_to, "end"),
    )
    for chunk in chunked(window.meter_ids, IN_CHUNK):
        for agg, beyond, kind in edges:
            edge = (
                sa.select(t.c.meter_id.label("edge_meter"), agg(t.c.message_time).label("edge_time"))
                .where(t.c.meter_id.in_(chunk), beyond)
                .group_by(t.c.meter_id)
                .subquery()
            )
            query = (
                sa.select(*selected)
                .join(edge, sa.and_(t.c.meter_id == edge.c.edge_meter, t.c.message_time == edge.c.edge_time))
                .where(t.c.message_type == kind)
            )
            frames.append(rows_to_frame(EV_CHARGING_EVENTS, conn.execute(query).fetchall(), sessions.PAIRING_COLUMNS))
    return pl.concat(frames)


def old_replaced_sessions(warehouse, conn, window: pairing.PairingWindow, edge_ids: list[str]) -> pl.DataFrame:
    """One predicate: meter_id IN (...) AND (start in the window OR (no start AND end in the
    window) OR an edge session)."""
    s = warehouse.table(EV_CHARGING_SESSIONS).c
    anchored = sa.or_(
        s.start_time.between(window.write_from, window.write_to),
        sa.and_(s.start_time.is_(None), s.end_time.between(window.write_from, window.write_to)),
        *([s.session_id.in_(edge_ids)] if edge_ids else []),
    )
    return warehouse.read_in(
        EV_CHARGING_SESSIONS, "meter_id", window.meter_ids, anchored, conn=conn, columns=sessions._STORED_CONTENT
    )


# --- the hand-made feed -----------------------------------------------------------------------

METERS = ("M1", "M2", "M3", "M4", "M5")


def history(days_back: range, meters=METERS[:4]) -> list[dict]:
    """A two-hour 7 kW session a day per meter, `days_back` days before June 1: old, closed history."""
    records = []
    for back in days_back:
        ts = at(1, 18) - timedelta(days=back)
        for meter in meters:
            records += [start(meter, ts, 7000), end(meter, ts + timedelta(hours=2), 14000, 2)]
    return records


# Around the window of the batch below (its messages June 12 to 14; max_session 48 h, so sessions
# anchored June 10 to 16 are replaced and events June 8 to 18 read):
BEFORE_BATCH = [
    # M1: a start long before the window, open (timed out): its end comes in the batch, 240 h later.
    start("M1", at(3, 18), 7000),
    # M2: an end far after the window whose start was never stored (end_only): the batch's start
    # pairs with it (7 kW x 312 h fits 40 kWh).
    end("M2", at(25, 18), 40000, 312),
    # M3: an end_only session inside the window (its start was lost), and one far before it.
    end("M3", at(11, 6), 9000, 3),
    end("M3", at(2, 6), 9000, 3),
    # M4: back to back before the window (an end and the next start at the same time): the start
    # is the edge, open until the batch's end.
    start("M4", at(6, 8), 7000),
    end("M4", at(6, 10), 14000, 2),
    start("M4", at(6, 10), 7000),
]
BATCH = [
    end("M1", at(13, 18), 40000, 240),
    start("M2", at(12, 18), 7000),
    start("M3", at(12, 6), 7000),
    end("M3", at(12, 9), 21000, 3),
    end("M4", at(14, 10), 50000, 192),
    start("M5", at(13, 0), 7000),  # a meter without history: no edges
]


@pytest.fixture
def feed(warehouse, tmp_path) -> Feed:
    return Feed(warehouse, tmp_path)


def ingest_only(feed: Feed, records: list[dict]) -> str:
    """Ingest a batch without pairing it; its id."""
    feed.n += 1
    path = feed.folder / f"batch{feed.n}.json"
    path.write_text(json.dumps({"EVChargingEvents": records}))
    pipeline.ingest_batch(feed.warehouse, f"b{feed.n}", [path], feed.settings, now=at(20))
    return f"b{feed.n}"


def window_of(feed: Feed, batch_id: str) -> pairing.PairingWindow:
    wh = feed.warehouse
    changed = wh.read_in(EV_CHARGING_EVENTS, "batch_id", [batch_id], columns=("message_id", "meter_id", "message_time"))
    return pairing.pairing_window(changed, feed.settings.max_session)


def test_edge_events_and_replaced_sessions_give_the_answers_of_before(feed):
    wh = feed.warehouse
    feed.send(history(range(1, 30)), paired_at=at(1))
    feed.send(BEFORE_BATCH, paired_at=at(9))
    window = window_of(feed, ingest_only(feed, BATCH))
    with wh.engine.connect() as conn:
        edges = sessions.edge_events(wh, conn, window)
        before = old_edge_events(wh, conn, window)
        edge_ids = pairing.edge_session_ids(edges)
        replaced = sessions.replaced_sessions(wh, conn, window, edge_ids)
        replaced_before = old_replaced_sessions(wh, conn, window, edge_ids)
    assert edges.sort("message_id").equals(before.sort("message_id"))
    # The cases above are all there: M1's and M4's open starts, M2's end after the window.
    assert sorted(edges.select("meter_id", "message_type", "message_time").rows()) == [
        ("M1", "start", at(3, 18)),
        ("M2", "end", at(25, 18)),
        ("M4", "start", at(6, 10)),
    ]
    assert replaced.sort("session_id").equals(replaced_before.sort("session_id"))
    assert sorted(replaced.select("session_id", "status").rows()) == [
        ("M1|2024-06-03T18:00:00.000000Z", "timed_out"),
        ("M2|end|2024-06-25T18:00:00.000000Z", "end_only"),
        ("M3|end|2024-06-11T06:00:00.000000Z", "end_only"),
        ("M4|2024-06-06T10:00:00.000000Z", "timed_out"),
    ]


def test_pairing_on_history_equals_a_rebuild(feed):
    wh = feed.warehouse
    feed.send(history(range(1, 30)), paired_at=at(1))
    feed.send(BEFORE_BATCH, paired_at=at(9))
    report = feed.send(BATCH, paired_at=at(20))[1]
    # M1's and M4's open starts and M2's end_only change; M3's end_only in the window (June 11)
    # re-pairs the same and is left as it is.
    assert report.sessions_replaced == 3
    incremental = feed.sessions().drop("updated_at")
    pipeline.rebuild_sessions(wh, feed.settings, now=at(20))
    assert feed.sessions().drop("updated_at").equals(incremental)
    window = incremental.filter(pl.col("meter_id").is_in(METERS), pl.coalesce("start_time", "end_time") >= at(2))
    assert window.select("meter_id", "status", "start_time", "end_time").rows() == [
        ("M1", "complete", at(3, 18), at(13, 18)),
        ("M2", "complete", at(12, 18), at(25, 18)),
        ("M3", "end_only", None, at(2, 6)),
        ("M3", "end_only", None, at(11, 6)),
        ("M3", "complete", at(12, 6), at(12, 9)),
        ("M4", "complete", at(6, 8), at(6, 10)),
        ("M4", "complete", at(6, 10), at(14, 10)),
        ("M5", "timed_out", at(13, 0), None),
    ]


# --- query plans, and SQLite's work per statement ---------------------------------------------

# Tables that grow with every batch (as bench/run_bench.py GROWING_TABLES).
GROWING = {
    "ev_charging_events",
    "ev_charging_sessions",
    "ev_feed_files",
    "ev_rejected_messages",
    "ev_ingest_batches",
    "ev_quarantined_files",
    "ev_batch_pairing",
}


def sqlite_only(warehouse):
    if warehouse.dialect != "sqlite":
        pytest.skip("VM steps are SQLite's")


def recorded(warehouse, action) -> list[tuple[str, tuple]]:
    """Every SELECT, DELETE and UPDATE `action` sends, with its parameters."""
    statements: list[tuple[str, tuple]] = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "WITH", "DELETE", "UPDATE")):
            statements.append((statement, parameters))

    sa.event.listen(warehouse.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        sa.event.remove(warehouse.engine, "before_cursor_execute", record)
    return statements


def sqlite_plan(warehouse, statement: str, parameters) -> list[str]:
    with warehouse.engine.connect() as conn:
        rows = conn.connection.driver_connection.execute("EXPLAIN QUERY PLAN " + statement, parameters or ()).fetchall()
    return [row[3] for row in rows]


def postgres_plan(warehouse, statement: str, parameters) -> list[dict]:
    """The plan's nodes, as PostgreSQL plans the statement when it may not scan a table whole
    (enable_seqscan off): a sequential scan then still appears where no index can serve."""
    with warehouse.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute("SET LOCAL enable_seqscan = off")  # this transaction only: rolled back below
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        root = cursor.fetchone()[0][0]["Plan"]
        conn.rollback()
    nodes, todo = [], [root]
    while todo:
        node = todo.pop()
        if "Relation Name" in node:  # a month partition's scan (PostgreSQL, 0022) is its table's
            node["Relation Name"] = _PARTITION.sub("", node["Relation Name"])
        nodes.append(node)
        todo += node.get("Plans", [])
    return nodes


_PARTITION = re.compile(r"_(p\d{4}_\d{2}|default)$")


def test_every_statement_of_a_batch_seeks_on_an_index(feed):
    wh = feed.warehouse
    feed.send(history(range(1, 30)), paired_at=at(1))
    feed.send(BEFORE_BATCH, paired_at=at(9))
    statements = recorded(wh, lambda: feed.send(BATCH, paired_at=at(20)))
    # What waits for pairing is read from the queue alone, not from the ledger.
    pending = [s for s, _ in statements if "ev_batches_pending" in s and s.lstrip().upper().startswith("SELECT")]
    assert pending and all("ev_ingest_batches" not in s and "ev_batch_pairing" not in s for s in pending)
    if wh.dialect == "sqlite":
        assert_sqlite_seeks(wh, statements)
    else:
        assert_postgres_seeks(wh, statements)


def assert_sqlite_seeks(wh, statements) -> None:
    plans = {statement: sqlite_plan(wh, statement, parameters) for statement, parameters in statements}
    scans = [
        (detail, " ".join(statement.split())[:160])
        for statement, details in plans.items()
        for detail in details
        if (detail.startswith("SCAN ") and detail.split()[1] in GROWING) or "AUTOMATIC" in detail
    ]
    assert scans == []
    details = {detail for found in plans.values() for detail in found}
    assert {
        # the edges: a correlated max() / min() on the events' primary key (meter|type|time)
        "SEARCH x USING COVERING INDEX sqlite_autoindex_ev_charging_events_1 (message_id>? AND message_id<?)",
        # the window's events: a range of it per meter and type
        "SEARCH ev_charging_events USING INDEX sqlite_autoindex_ev_charging_events_1 (message_id>? AND message_id<?)",
        # a range of the primary key (meter|start time) per meter
        (
            "SEARCH ev_charging_sessions USING INDEX sqlite_autoindex_ev_charging_sessions_1 (session_id>? AND "
            "session_id<?)"
        ),
        (
            "SEARCH ev_charging_sessions USING INDEX ix_ev_charging_sessions_end_only_meter_id_end_time "
            "(meter_id=? AND end_time>? AND end_time<?)"
        ),
    } <= details


def assert_postgres_seeks(wh, statements) -> None:
    plans = {statement: postgres_plan(wh, statement, parameters) for statement, parameters in statements}
    scans = [
        (node["Relation Name"], " ".join(statement.split())[:160])
        for statement, nodes in plans.items()
        for node in nodes
        if node.get("Relation Name") in GROWING
        # a sequential scan, or an index read whole (no condition bounds it)
        and (node["Node Type"] == "Seq Scan" or ("Index" in node["Node Type"] and "Index Cond" not in node))
    ]
    assert scans == []
    conditions = {node.get("Index Cond", "") for nodes in plans.values() for node in nodes}
    # Each edge: a backward (max) or forward (min) scan of the events' primary key bounded on both
    # sides within the meter and type, stopped at its first row (the min/max optimisation turns
    # the aggregate into LIMIT 1).
    for direction in ("Backward", "Forward"):
        edge = [
            nodes
            for nodes in plans.values()
            if any(
                n.get("Alias") == "x"
                and n.get("Scan Direction") == direction
                and "message_id >= " in n.get("Index Cond", "")
                and "message_id <= " in n["Index Cond"]
                for n in nodes
            )
        ]
        # Partitioned (0022): the edges are sought in the days next to the window first, which on
        # these small partitions the planner may seek on the days' index: bounded too.
        days_first = [
            nodes
            for nodes in plans.values()
            if any(n.get("Alias") == "x" and "message_date >= '" in n.get("Index Cond", "") for n in nodes)
        ]
        assert (edge and all(any(n["Node Type"] == "Limit" for n in nodes) for nodes in edge)) or days_first, direction
    # The window's events: a range of the primary key per meter and type.
    # Partitioned (0022), the read also names the window's days, which prune the months: on these
    # small partitions the planner may then seek the window's days on their index instead, a
    # bounded seek too (on 3 M sessions it keeps the key's range: BENCHMARKS.md).
    days = {"message_id": "message_date >= '", "session_id": "event_date >= '"}
    assert any(("message_id >= (" in c and "message_id <= (" in c) or days["message_id"] in c for c in conditions), (
        conditions
    )
    # The replaced sessions: a range of start times within each meter, not the meter alone: of the
    # primary key (meter|start time) for those with a start, of the partial index by end time for
    # end_only ones.
    assert any(("session_id >= (" in c and "session_id <= (" in c) or days["session_id"] in c for c in conditions), (
        conditions
    )
    assert any(("meter_id = ANY" in c and "end_time >=" in c) or days["session_id"] in c for c in conditions), (
        conditions
    )


def vm_steps(warehouse, action) -> int:
    """Virtual-machine instructions SQLite runs for `action` on one connection (its progress
    handler, called at every instruction): the work of the statements, whatever the machine's load."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with warehouse.engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.set_progress_handler(count, 1)
        try:
            action(conn)
        finally:
            raw.set_progress_handler(None, 1)
    return steps


def test_the_edge_and_replaced_reads_cost_the_same_with_ten_times_the_history(feed):
    wh = feed.warehouse
    sqlite_only(wh)
    feed.send(history(range(1, 11)), paired_at=at(1))
    feed.send(BEFORE_BATCH, paired_at=at(9))
    # The batch's window, the batch not ingested: the history added below is paired, and pairing
    # would pair a waiting batch too.
    times = [r.get("ChargeStartTime") or r["ChargeEndTime"] for r in BATCH]
    batch = pl.DataFrame({"meter_id": [r["MeterID"] for r in BATCH], "message_time": times}).with_columns(
        pl.col("message_time").str.to_datetime(time_zone="UTC")
    )
    window = pairing.pairing_window(batch, feed.settings.max_session)

    def work() -> dict[str, int]:
        with wh.engine.connect() as conn:
            ids = pairing.edge_session_ids(sessions.edge_events(wh, conn, window))
        return {
            "edges": vm_steps(wh, lambda conn: sessions.edge_events(wh, conn, window)),
            "replaced": vm_steps(wh, lambda conn: sessions.replaced_sessions(wh, conn, window, ids)),
            "edges before": vm_steps(wh, lambda conn: old_edge_events(wh, conn, window)),
        }

    small = work()
    # Ten times the history of the same meters, older than anything above: the window's answers
    # do not change, so neither should the work of finding them.
    feed.send(history(range(11, 101)), paired_at=at(1))
    large = work()
    assert large["edges"] <= small["edges"] * 1.1 + 100, (small, large)
    assert large["replaced"] <= small["replaced"] * 1.1 + 100, (small, large)
    # The instrument sees the difference: the GROUP BY form read every event before the window.
    assert large["edges before"] > 3 * small["edges before"], (small, large)


# --- the queue of batches to pair ---------------------------------------------------------------


def test_ingest_queues_its_batch_and_pairing_takes_it_off(feed):
    wh = feed.warehouse
    first = ingest_only(feed, [start("M1", at(3, 18), 7000)])
    second = ingest_only(feed, [end("M1", at(3, 20), 14000, 2)])
    assert pipeline.batches_awaiting_pairing(wh) == [first, second]
    queued = wh.read(EV_BATCHES_PENDING).sort("batch_id")
    ledger = wh.read(EV_INGEST_BATCHES).sort("batch_id")
    assert queued["queued_at"].to_list() == ledger["processed_at"].to_list()

    report = pipeline.pair_pending_batches(wh, feed.settings, max_batches=1, now=at(4))
    assert report.batches == [first] and pipeline.batches_awaiting_pairing(wh) == [second]
    pipeline.pair_pending_batches(wh, feed.settings, now=at(4))
    assert pipeline.batches_awaiting_pairing(wh) == [] and wh.count(EV_BATCHES_PENDING) == 0
    assert sorted(wh.read(EV_BATCH_PAIRING)["batch_id"].to_list()) == [first, second]
    assert feed.sessions().select("status").rows() == [("complete",)]


def test_a_failed_pairing_leaves_its_batch_queued(feed, monkeypatch):
    wh = feed.warehouse
    batch = ingest_only(feed, [start("M1", at(3, 18), 7000)])

    def dies(*_args, **_kwargs):
        raise RuntimeError("the process died mid-pairing")

    monkeypatch.setattr(sessions, "time_out_open_starts", dies)
    with pytest.raises(RuntimeError):
        pipeline.pair_pending_batches(wh, feed.settings, now=at(4))
    assert pipeline.batches_awaiting_pairing(wh) == [batch] and wh.count(EV_BATCH_PAIRING) == 0
    assert wh.count(EV_CHARGING_SESSIONS) == 0
    monkeypatch.undo()
    pipeline.pair_pending_batches(wh, feed.settings, now=at(4))
    assert pipeline.batches_awaiting_pairing(wh) == [] and wh.count(EV_CHARGING_SESSIONS) == 1


_COUNTS_0008 = (
    "files_read",
    "files_parsed",
    "files_repaired",
    "files_quarantined",
    "files_already_read",
    "records_read",
    "accepted",
    "duplicates",
    "rejected",
)


def test_the_migration_queues_the_ledger_batches_not_paired(blank_warehouse_url):
    url = blank_warehouse_url
    migrate.upgrade(url, "0008")
    # The tables as revision 0008 has them, just the columns these rows need (typed, so SQLite
    # stores times as the warehouse does).
    ledger = sa.table(
        "ev_ingest_batches",
        sa.column("batch_id", sa.Text),
        sa.column("reconciled", sa.Boolean),
        sa.column("processed_at", sa.DateTime(timezone=True)),
        *[sa.column(name, sa.BigInteger) for name in _COUNTS_0008],
    )
    paired = sa.table(
        "ev_batch_pairing",
        sa.column("batch_id", sa.Text),
        sa.column("sessions_written", sa.BigInteger),
        sa.column("paired_at", sa.DateTime(timezone=True)),
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            ledger.insert(),
            [
                {"batch_id": f"b{n}", "reconciled": True, "processed_at": at(day), **dict.fromkeys(_COUNTS_0008, 0)}
                for n, day in ((1, 2), (2, 3), (3, 4))
            ],
        )
        conn.execute(paired.insert().values(batch_id="b2", sessions_written=0, paired_at=at(3)))
    engine.dispose()
    migrate.upgrade(url)
    wh = Warehouse(url)
    try:
        assert pipeline.batches_awaiting_pairing(wh) == ["b1", "b3"]
        assert wh.read(EV_BATCHES_PENDING).sort("batch_id").rows() == [("b1", at(2)), ("b3", at(4))]
    finally:
        wh.dispose()


# --- the daily load's read of its days' sessions ----------------------------------------------


def test_the_daily_load_reads_its_days_sessions_whatever_the_history(feed):
    """A range run of the daily load reads the complete sessions that can charge on its days. With
    ten times more (older) history of the same meters, that read must cost the same: it once took
    the (status, start_time) index for status = 'complete' alone, and read every complete session
    ever stored to keep a month's (2.0 s for 5,887 of 193,428 sessions, three years of 2,000
    meters; it grows with every day of history)."""
    from ev_assets.pipeline import planning_load

    wh = feed.warehouse
    sqlite_only(wh)
    feed.send(history(range(1, 11)), paired_at=at(1))
    feed.send(BEFORE_BATCH + BATCH, paired_at=at(20))
    first, last = at(12).date(), at(14).date()

    def read(conn):
        return planning_load.complete_sessions_for_days(wh, conn, feed.settings, first, last)

    with wh.engine.connect() as conn:
        expected = read(conn).sort("session_id")
    assert expected.height > 0
    small = vm_steps(wh, read)
    feed.send(history(range(11, 101)), paired_at=at(1))
    large = vm_steps(wh, read)
    with wh.engine.connect() as conn:
        assert read(conn).sort("session_id").equals(expected)  # old history charges on none of the days
    assert large <= small * 1.1 + 100, (small, large)


def test_a_batch_rewrites_only_the_sessions_it_changes(feed):
    """A window holds the meter's stored sessions of the last max_session too; re-paired unchanged,
    they are not deleted and written again (which would cost each a write in every index, bloat
    PostgreSQL with dead rows and move their updated_at though nothing changed)."""
    # M1 charged on June 1 evening (complete); M2 started on June 1 and is still open.
    feed.send(
        [start("M1", at(1, 18), 7000), end("M1", at(1, 20), 14000, 2), start("M2", at(1, 19), 7000)],
        paired_at=at(1, 21),
    )
    # June 2 morning (within max_session, 48 h, of both): M1 starts again, M2's end arrives.
    _, report = feed.send([start("M1", at(2, 7), 7000), end("M2", at(2, 9), 14000, 14)], paired_at=at(2, 10))
    rows = feed.sessions().select("session_id", "status", "updated_at").rows()
    assert rows == [
        ("M1|2024-06-01T18:00:00.000000Z", "complete", at(1, 21)),  # unchanged: not rewritten
        ("M1|2024-06-02T07:00:00.000000Z", "start_only", at(2, 10)),  # new
        ("M2|2024-06-01T19:00:00.000000Z", "complete", at(2, 10)),  # changed: start_only -> complete
    ]
    assert (report.sessions_written, report.sessions_replaced) == (2, 1)
    assert report.written["session_id"].to_list() == [
        "M1|2024-06-02T07:00:00.000000Z",
        "M2|2024-06-01T19:00:00.000000Z",
    ]
    # Only the days of changed sessions are queued for their load: June 2 (M1's new start) and
    # June 1 to 2 (M2's session); M1's June 1 session alone would not have queued June 1.
    assert [d.isoformat() for d in report.touched_dates] == ["2024-06-01", "2024-06-02"]

    # The same batch again, and a rebuild: nothing changes, nothing is written.
    _, again = feed.send([start("M1", at(2, 7), 7000), end("M2", at(2, 9), 14000, 14)], paired_at=at(2, 11))
    assert (again.sessions_written, again.sessions_replaced) == (0, 0)
    rebuilt = pipeline.rebuild_sessions(feed.warehouse, feed.settings, now=at(2, 12))
    assert (rebuilt.sessions_written, rebuilt.sessions_replaced, rebuilt.touched_dates) == (0, 0, [])
    assert feed.sessions().select("session_id", "status", "updated_at").rows() == rows


def test_a_meters_sessions_are_read_by_id_range_and_no_other_meters(feed):
    """Meter ids that extend one another (M1, M1-2, M1.5, M10, M1_x) all sort near M1's ids; the
    ranges `M1|...` hold M1's sessions only, since identifiers have no '|'. A batch on M1 alone
    replaces M1's sessions only, and a rebuild of all meters finds every session once."""
    meters = ("M1", "M1-2", "M1.5", "M10", "M1_x")
    feed.send(history(range(1, 4), meters=meters), paired_at=at(1, 1))
    before = feed.sessions()
    _, report = feed.send([end("M1", at(1, 7), 14000, 2), start("M1", at(1, 5), 7000)], paired_at=at(1, 8))
    assert (report.sessions_written, report.sessions_replaced) == (1, 0)
    after = feed.sessions()
    assert after.filter(pl.col("meter_id") != "M1").equals(before.filter(pl.col("meter_id") != "M1"))
    wh = feed.warehouse
    with wh.engine.connect() as conn:
        window = sessions.replaced_sessions(wh, conn, window_of(feed, f"b{feed.n}"), [])
    # M1's sessions starting from May 30, 05:00 (the batch's first message less 48 h): May 30 and
    # 31 of the history, and the batch's own.
    assert window.select("meter_id", "start_time").rows() == [("M1", at(1, 18) - timedelta(days=d)) for d in (2, 1)] + [
        ("M1", at(1, 5))
    ]
    rebuilt = pipeline.rebuild_sessions(wh, feed.settings, now=at(1, 9))
    assert (rebuilt.sessions_written, rebuilt.sessions_replaced) == (0, 0)
    assert feed.sessions().equals(after)


def test_edges_at_the_millisecond_of_the_window_bounds(feed):
    """Ids keep the millisecond, times the microsecond: the id at a bound's millisecond may be a
    message on the other side of the bound. The edges are still the events nearest the window
    from outside (the answers the (meter_id, message_time) query gave)."""

    def micro(ts, us: int) -> str:
        return (ts + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    first = at(12, 6)  # the batch: June 12 06:00:00.000500, so write_from is June 10 06:00:00.000500
    feed.send(
        [
            # M7: its last event before the window is a start 0.3 ms before write_from.
            start("M7", at(10, 6), 7000, ChargeStartTime=micro(at(10, 6), 200)),
            # M8: an end 0.3 ms after write_from (inside), an earlier end before it: no open start.
            start("M8", at(9, 18), 7000),
            end("M8", at(9, 20), 14000, 2),
            end("M8", at(10, 6), 9000, 3, ChargeEndTime=micro(at(10, 6), 800)),
            # M9: an end 0.2 ms before write_to (inside), then an end after it: the edge.
            end("M9", at(14, 6), 9000, 3, ChargeEndTime=micro(at(14, 6), 300)),
            end("M9", at(14, 8), 9000, 3),
            start("M9", at(14, 9), 7000),
        ],
        paired_at=at(9),
    )
    batch = [start(m, first, 7000, ChargeStartTime=micro(first, 500)) for m in ("M7", "M8", "M9")]
    window = window_of(feed, ingest_only(feed, batch))
    assert window.write_from == at(10, 6) + timedelta(microseconds=500)
    wh = feed.warehouse
    with wh.engine.connect() as conn:
        edges = sessions.edge_events(wh, conn, window)
        before = old_edge_events(wh, conn, window)
    assert sorted(edges.select("meter_id", "message_type", "message_time").rows()) == [
        ("M7", "start", at(10, 6) + timedelta(microseconds=200)),
        ("M9", "end", at(14, 8)),
    ]
    assert edges.sort("message_id").equals(before.sort("message_id"))
