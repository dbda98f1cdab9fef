"""PostgreSQL's month partitions of the history (migration 0022, ev_assets.warehouse.month_partitions):
a populated warehouse of revision 0020 is converted with every row intact; rows of a month without
its partition wait in DEFAULT and are moved out; ensure_month_partitions is idempotent; an old month
is detached (or dropped) and the pipeline carries on. Skipped without EV_TEST_POSTGRES_URL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from ev_assets import pipeline
from ev_assets.warehouse import migrate
from ev_assets.warehouse.month_partitions import (
    detach_month,
    ensure_month_partitions,
    list_partitions,
    partitioned_tables,
)
from ev_assets.warehouse.store import Warehouse, make_engine
from ev_assets.warehouse.tables import (
    ALL_TABLES,
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    PARTITIONED_TABLES,
    TRANSFORMER_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
)
from ev_assets_tests.conftest import POSTGRES_URL, _postgres_database, simulate

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL partitions: set EV_TEST_POSTGRES_URL")

REPO = Path(__file__).resolve().parent.parent
# The last commit at revision 0020 (the head before 0021 and 0022): its code writes the warehouse converted.
REVISION_0020_COMMIT = "11e7b64"
# The feed spans the end of May into June 2024: two months in every partitioned table.
FEED_START = date(2024, 5, 30)
FEED_DAYS = 4
TODAY = date(2024, 7, 15)

# Run with the code of REVISION_0020_COMMIT (PYTHONPATH): reference, a feed, ingest, pairing and the
# daily load of its days into the warehouse at argv[1] (at revision 0020); the feed is in argv[2].
_PIPELINE_AT_0020 = textwrap.dedent(
    """
    import sys
    from datetime import date, timedelta
    from pathlib import Path

    from ev_assets import pipeline
    from ev_assets.synthetic import simulator, utility
    from ev_assets.warehouse import migrate
    from ev_assets.warehouse.store import Warehouse

    url, landing, start, days = sys.argv[1], Path(sys.argv[2]), date.fromisoformat(sys.argv[3]), int(sys.argv[4])
    assert migrate.head() == "0020", migrate.head()
    migrate.upgrade(url)
    frames = utility.generate_utility(meters=300, seed=11)
    sessions = simulator.simulate_sessions(frames, start, days, 3)
    paths = simulator.write_feed(simulator.session_messages(sessions, 3), landing)
    settings = pipeline.PipelineSettings()
    wh = Warehouse(url)
    pipeline.load_reference(wh, frames, settings)
    assert pipeline.ingest_batch(wh, "at-0020", sorted(paths), settings).reconciled
    pipeline.pair_pending_batches(wh, settings)
    pipeline.update_daily_load(wh, settings, start - timedelta(days=1), start + timedelta(days=days))
    wh.dispose()
    """
)


@pytest.fixture
def pg_url():
    url, drop = _postgres_database()
    yield url
    drop()


@pytest.fixture(scope="module")
def code_at_0020(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("code_at_0020")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", REVISION_0020_COMMIT, "ev_assets"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        pytest.fail(f"git archive {REVISION_0020_COMMIT} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _digests(url: str, only=None) -> dict[str, tuple[int, str | None]]:
    """Per table: its rows and a digest of them all (every column, as text, in a fixed order). The
    partitioned table keeps the columns' order, so the digests compare across the conversion.
    The tables the database holds (a warehouse at 0020 lacks those of later revisions), or `only`."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            names = set(only) if only is not None else set(sa.inspect(conn).get_table_names())
            return {
                spec.name: tuple(
                    conn.execute(
                        sa.text(
                            f"SELECT count(*), md5(string_agg(CAST(t AS text), E'\\n' ORDER BY CAST(t AS text))) "
                            f'FROM "{spec.name}" t'
                        )
                    ).one()
                )
                for spec in ALL_TABLES
                if spec.name in names
            }
    finally:
        engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), revision)
    finally:
        engine.dispose()


def _rows_in(url: str, relation: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f'SELECT count(*) FROM ONLY "{relation}"')).scalar_one()
    finally:
        engine.dispose()


def _since(wh: Warehouse, first: date) -> dict[str, pl.DataFrame]:
    """The sessions and transformer load from `first` on, without the columns that say when a row
    was written or by which batch."""
    out = {}
    for spec in (EV_CHARGING_SESSIONS, TRANSFORMER_DAILY_LOAD, TRANSFORMER_INTERVAL_LOAD):
        column = wh.table(spec).c[spec.partition_by_month]
        frame = wh.read(spec, column >= first).drop("updated_at")
        out[spec.name] = frame.sort(list(spec.primary_key))
    return out


def test_a_populated_warehouse_at_0020_is_partitioned_with_every_row(pg_url, code_at_0020, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(code_at_0020)}
    done = subprocess.run(
        [sys.executable, "-c", _PIPELINE_AT_0020, pg_url, str(tmp_path / "landing"), FEED_START.isoformat(), "4"],
        cwd=code_at_0020,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert migrate.current(pg_url) == "0020"
    before = _digests(pg_url)
    for spec in PARTITIONED_TABLES:  # the feed filled every table converted
        assert before[spec.name][0] > 0, spec.name

    assert migrate.upgrade(pg_url) == ("0020", migrate.head())

    assert _digests(pg_url, only=before) == before
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert [s.name for s in partitioned_tables(conn)] == [s.name for s in PARTITIONED_TABLES]
            inspector = sa.inspect(conn)
            for spec in PARTITIONED_TABLES:
                pk = inspector.get_pk_constraint(spec.name)["constrained_columns"]
                assert tuple(pk) == spec.postgres_primary_key
        parts = list_partitions(engine)
    finally:
        engine.dispose()
    # May and June 2024 (the data's months; a day's load may reach the 29th) and DEFAULT, empty.
    events = [p for p in parts if p.table == EV_CHARGING_EVENTS.name]
    assert [(p.start, p.rows > 0) for p in events[:-1]] == [(date(2024, 5, 1), True), (date(2024, 6, 1), True)]
    assert events[-1].start is None and events[-1].rows == 0
    assert sum(p.rows for p in events) == before[EV_CHARGING_EVENTS.name][0]

    # and back: the downgrade gives the plain tables, every row still there
    _downgrade(pg_url, "0020")
    assert migrate.current(pg_url) == "0020"
    assert _digests(pg_url, only=before) == before
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert partitioned_tables(conn) == []
    finally:
        engine.dispose()


def test_rows_in_default_are_moved_out_and_ensure_is_idempotent(warehouse_url, small_utility, settings, tmp_path):
    if not warehouse_url.startswith("postgresql"):
        engine = make_engine(warehouse_url)  # SQLite: plain tables, nothing to make
        try:
            assert ensure_month_partitions(engine, 3) == [] and list_partitions(engine) == []
        finally:
            engine.dispose()
        return
    wh = Warehouse(warehouse_url)
    pipeline.load_reference(wh, small_utility, settings)
    simulate(small_utility, tmp_path / "landing", days=FEED_DAYS, start=FEED_START)
    assert pipeline.ingest_batch(wh, "b1", sorted((tmp_path / "landing").glob("*.json")), settings).reconciled
    pipeline.pair_pending_batches(wh, settings)
    pipeline.update_daily_load(wh, settings, FEED_START, date(2024, 6, 3))
    before = _digests(warehouse_url)
    wh.dispose()
    # a fresh warehouse has no month partitions of 2024: every row went to DEFAULT
    for spec in PARTITIONED_TABLES:
        assert _rows_in(warehouse_url, f"{spec.name}_default") == before[spec.name][0] > 0, spec.name

    engine = make_engine(warehouse_url)
    try:
        created = ensure_month_partitions(engine, 2, today=TODAY)
        # July, August, September 2024 ahead, May and June out of DEFAULT: in every table
        months = ("2024_05", "2024_06", "2024_07", "2024_08", "2024_09")
        assert sorted(created) == sorted(f"{s.name}_p{m}" for s in PARTITIONED_TABLES for m in months)
        assert ensure_month_partitions(engine, 2, today=TODAY) == []  # idempotent
        parts = list_partitions(engine)
    finally:
        engine.dispose()
    assert _digests(warehouse_url) == before
    for spec in PARTITIONED_TABLES:
        assert _rows_in(warehouse_url, f"{spec.name}_default") == 0, spec.name
        held = {p.start: p.rows for p in parts if p.table == spec.name}
        assert held[date(2024, 5, 1)] + held[date(2024, 6, 1)] == before[spec.name][0]
        assert held[date(2024, 7, 1)] == held[date(2024, 8, 1)] == held[date(2024, 9, 1)] == 0


def test_an_old_month_is_detached_and_the_pipeline_carries_on(pg_url, small_utility, settings, tmp_path):
    migrate.upgrade(pg_url)
    wh = Warehouse(pg_url)
    pipeline.load_reference(wh, small_utility, settings)
    simulate(small_utility, tmp_path / "old", days=FEED_DAYS, start=FEED_START, seed=3)
    assert pipeline.ingest_batch(wh, "old", sorted((tmp_path / "old").glob("*.json")), settings).reconciled
    pipeline.pair_pending_batches(wh, settings)
    pipeline.update_daily_load(wh, settings, FEED_START, date(2024, 6, 3))
    engine = make_engine(pg_url)
    try:
        ensure_month_partitions(engine, 1, today=TODAY)
        may = {p.table: p.rows for p in list_partitions(engine) if p.start == date(2024, 5, 1)}
        assert all(may[s.name] > 0 for s in PARTITIONED_TABLES), may
        with pytest.raises(ValueError, match="not before the current month"):
            detach_month(engine, date(2024, 7, 1), today=TODAY)
        events_before = wh.count(EV_CHARGING_EVENTS)
        detached = detach_month(engine, date(2024, 5, 1), today=TODAY)
        assert sorted(detached) == sorted(f"{s.name}_p2024_05" for s in PARTITIONED_TABLES)
        # detached, not lost: each partition kept as a plain table, to archive
        for spec in PARTITIONED_TABLES:
            assert _rows_in(pg_url, f"{spec.name}_p2024_05_detached") == may[spec.name]
        assert wh.count(EV_CHARGING_EVENTS) == events_before - may[EV_CHARGING_EVENTS.name]
        assert wh.read(EV_CHARGING_EVENTS, wh.table(EV_CHARGING_EVENTS).c.message_date < date(2024, 6, 1)).is_empty()

        # a new batch, late June (partitioned) into July: ingested, paired and loaded as on a warehouse
        # that never held May (the old feed ended on June 2, too early to pair with it)
        simulate(small_utility, tmp_path / "new", days=3, start=date(2024, 6, 29), seed=8)
        new_files = sorted((tmp_path / "new").glob("*.json"))
        report = pipeline.ingest_batch(wh, "new", new_files, settings)
        assert report.reconciled and report.accepted > 0 and report.duplicates == 0
        assert pipeline.pair_pending_batches(wh, settings).sessions_written > 0
        pipeline.update_daily_load(wh, settings, date(2024, 6, 29), date(2024, 7, 1))
        got = _since(wh, date(2024, 6, 29))
        alone_url, drop = _postgres_database()
        try:
            migrate.upgrade(alone_url)
            alone = Warehouse(alone_url)
            pipeline.load_reference(alone, small_utility, settings)
            pipeline.ingest_batch(alone, "new", new_files, settings)
            pipeline.pair_pending_batches(alone, settings)
            pipeline.update_daily_load(alone, settings, date(2024, 6, 29), date(2024, 7, 1))
            expected = _since(alone, date(2024, 6, 29))
            alone.dispose()
        finally:
            drop()
        for name, frame in expected.items():
            # Sums of floats may add in another order (rows read from other partitions): to 1e-9.
            assert frame.height > 0, name
            assert_frame_equal(frame, got[name], check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
        july = {p.table: p.rows for p in list_partitions(engine) if p.start == date(2024, 7, 1)}
        assert july["transformer_daily_load"] > 0 and july["ev_charging_sessions"] > 0

        # and a month can go for good
        assert sorted(detach_month(engine, date(2024, 6, 1), drop=True, today=TODAY)) == sorted(
            f"{s.name}_p2024_06" for s in PARTITIONED_TABLES
        )
        with engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
        assert not any(name.endswith("_p2024_06") or name.endswith("_p2024_06_detached") for name in names)
    finally:
        engine.dispose()
        wh.dispose()


def test_the_daily_schedule_runs_the_job_that_makes_the_months_ahead(pg_url, monkeypatch):
    import dagster as dg

    from ev_assets.definitions import defs
    from ev_assets.defs.month_partitions import month_partitions_job, month_partitions_schedule
    from ev_assets.defs.resources import WarehouseResource

    migrate.upgrade(pg_url)
    monkeypatch.setenv("EV_PARTITION_MONTHS_AHEAD", "2")
    repo = defs.get_repository_def()
    assert month_partitions_schedule.name in {s.name for s in repo.schedule_defs}
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 8, 0, 15, tzinfo=UTC))
    requests = month_partitions_schedule.evaluate_tick(context).run_requests
    assert [r.run_key for r in requests] == ["month_partitions:2026-12-08"]

    result = month_partitions_job.execute_in_process(resources={"warehouse": WarehouseResource(url=pg_url)})
    assert result.success
    engine = make_engine(pg_url)
    try:
        held = {(p.table, p.start) for p in list_partitions(engine, count_rows=False)}
        first = datetime.now(UTC).date().replace(day=1)
        months = [first]
        for _ in range(2):
            months.append(date(months[-1].year + months[-1].month // 12, months[-1].month % 12 + 1, 1))
        assert {(s.name, m) for s in PARTITIONED_TABLES for m in months} <= held
        assert len(held) == len(PARTITIONED_TABLES) * 4  # those three and DEFAULT
        assert ensure_month_partitions(engine, 2) == []  # the job made them all
    finally:
        engine.dispose()


def test_the_db_commands_make_list_and_detach_months(pg_url, small_utility, settings, tmp_path, monkeypatch, capsys):
    from ev_assets import cli

    monkeypatch.setenv("EV_WAREHOUSE_URL", pg_url)
    monkeypatch.setenv("EV_PARTITION_MONTHS_AHEAD", "1")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert cli.main(["db", "upgrade"]) == 0
    this_month = datetime.now(UTC).date().replace(day=1)
    assert f"ev_charging_events_p{this_month:%Y_%m}" in capsys.readouterr().out
    wh = Warehouse(pg_url)
    pipeline.load_reference(wh, small_utility, settings)
    simulate(small_utility, tmp_path / "landing", days=2, start=date(2024, 6, 3))
    pipeline.ingest_batch(wh, "b", sorted((tmp_path / "landing").glob("*.json")), settings)
    events = wh.count(EV_CHARGING_EVENTS)
    wh.dispose()
    assert cli.main(["db", "upgrade"]) == 0  # June 2024 moved out of DEFAULT
    assert "ev_charging_events_p2024_06" in capsys.readouterr().out
    assert cli.main(["db", "partitions"]) == 0
    listed = capsys.readouterr().out
    assert "ev_charging_events_p2024_06" in listed and f"{events:,}" in listed and "DEFAULT" in listed

    assert cli.main(["db", "detach-month", "2024-6"]) == 2  # not YYYY-MM
    assert cli.main(["db", "detach-month", f"{this_month:%Y-%m}"]) == 2  # the pipeline writes it
    assert cli.main(["db", "detach-month", "2023-01"]) == 1  # no such partition
    capsys.readouterr()
    assert cli.main(["db", "detach-month", "2024-06"]) == 0
    # only the events were written (no pairing yet): only they had June out of DEFAULT
    assert "1 partitions detached" in capsys.readouterr().out
    assert _rows_in(pg_url, "ev_charging_events_p2024_06_detached") == events


def test_reads_by_id_on_partitions_find_what_a_filter_finds(pg_url, small_utility, settings, tmp_path):
    """read_in and delete_in by event id name each id's month; ids of another form (no time) fall
    back to every month, never fail; the rows are those a plain filter finds."""
    migrate.upgrade(pg_url)
    wh = Warehouse(pg_url)
    try:
        pipeline.load_reference(wh, small_utility, settings)
        simulate(small_utility, tmp_path / "landing", days=FEED_DAYS, start=FEED_START)
        pipeline.ingest_batch(wh, "b", sorted((tmp_path / "landing").glob("*.json")), settings)
        engine = make_engine(pg_url)
        try:
            ensure_month_partitions(engine, 0, today=TODAY)  # May and June out of DEFAULT
        finally:
            engine.dispose()
        stored = wh.read(EV_CHARGING_EVENTS).sort("message_id")
        wanted = stored["message_id"].gather(list(range(0, stored.height, 7))).to_list()
        expected = stored.filter(pl.col("message_id").is_in(wanted))
        unknown = "M-none|" + wanted[0].split("|", 1)[1]  # well formed, not stored
        assert wh._partition_days_of_ids(EV_CHARGING_EVENTS, "message_id", [*wanted, unknown], None)
        by_month = wh.read_in(EV_CHARGING_EVENTS, "message_id", [*wanted, unknown])
        assert by_month.sort("message_id").equals(expected)
        every_month = wh.read_in(EV_CHARGING_EVENTS, "message_id", [*wanted, "no-such-id"])
        assert every_month.sort("message_id").equals(expected)
        with wh.transaction() as conn:
            assert wh.delete_in(conn, EV_CHARGING_EVENTS, "message_id", wanted) == len(wanted)
        assert wh.count(EV_CHARGING_EVENTS) == stored.height - len(wanted)
    finally:
        wh.dispose()
