"""Schema migrations: a warehouse made by the code before migrations existed is adopted with every
row kept; a blank database is refused until upgraded; the declarations and the migrations agree;
the warehouse keeps the time zone its days were computed in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ev_assets import pipeline
from ev_assets.warehouse import migrate
from ev_assets.warehouse.store import SchemaBehindError, Warehouse, WarehouseSettingsError, make_engine
from ev_assets.warehouse.tables import ALL_TABLES, EV_CHARGING_SESSIONS, EV_WAREHOUSE_SETTINGS

REPO = Path(__file__).resolve().parent.parent
# The last commit whose code created its tables itself (revision 0001 is its schema).
PRE_MIGRATION_COMMIT = "80cbb5f"

# Run with the code of PRE_MIGRATION_COMMIT (PYTHONPATH): a small utility and two days of feed,
# with a file that cannot be parsed and a record the contract rejects, through every step into
# the database at argv[1]; then every table as Parquet into argv[2], as the old code reads it.
_OLD_PIPELINE = textwrap.dedent(
    """
    import sys
    from datetime import date
    from pathlib import Path

    from ev_assets import pipeline, simulator, utility
    from ev_assets.tables import ALL_TABLES
    from ev_assets.warehouse import Warehouse

    url, out = sys.argv[1], Path(sys.argv[2])
    landing = out / "landing"
    frames = utility.generate_utility(meters=50, seed=1)
    sessions = simulator.simulate_sessions(frames, date(2024, 6, 3), 2, 3)
    paths = simulator.write_feed(simulator.session_messages(sessions, 3), landing)
    (landing / "zz_broken.json").write_bytes(b'{"EVChargingEvents": [{"MeterID": ')
    (landing / "zz_bad_record.json").write_text('{"EVChargingEvents": [{"MeterID": "1", "ChargeW": "abc"}]}')
    paths += [landing / "zz_broken.json", landing / "zz_bad_record.json"]

    settings = pipeline.PipelineSettings()
    wh = Warehouse(url)
    pipeline.load_reference(wh, frames, settings)
    report = pipeline.ingest_batch(wh, "old-1", paths, settings)
    assert report.accepted and report.rejected and report.files_quarantined, report
    pipeline.update_sessions(wh, settings, batch_id="old-1")
    pipeline.update_daily_load(wh, settings, date(2024, 6, 3), date(2024, 6, 4))
    for spec in ALL_TABLES:
        wh.read(spec).write_parquet(out / f"{spec.name}.parquet")
    wh.dispose()
    print(len(paths))
    """
)


@pytest.fixture(scope="session")
def old_code(tmp_path_factory) -> Path:
    """The `ev_assets` package of PRE_MIGRATION_COMMIT, extracted from the git history."""
    target = tmp_path_factory.mktemp("pre_migration_code")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PRE_MIGRATION_COMMIT, "ev_assets"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        pytest.fail(
            f"git archive {PRE_MIGRATION_COMMIT} failed ({archive.stderr.decode().strip()}): "
            "the migration tests need the repository's history (a full clone, not a shallow one)"
        )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _run_old_pipeline(old_code: Path, url: str, out: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(old_code)}
    # cwd outside the project: the current code must not shadow the old one.
    done = subprocess.run(
        [sys.executable, "-c", _OLD_PIPELINE, url, str(out)], cwd=old_code, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1])


def _row_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            names = [n for n in sa.inspect(conn).get_table_names() if n != migrate.VERSION_TABLE]
            return {n: conn.execute(sa.text(f'SELECT count(*) FROM "{n}"')).scalar_one() for n in names}
    finally:
        engine.dispose()


def _sorted(frame: pl.DataFrame, key: tuple[str, ...]) -> pl.DataFrame:
    return frame.sort(list(key))


def test_a_pre_migration_warehouse_is_adopted_with_every_row(old_code, blank_warehouse_url, tmp_path):
    url = blank_warehouse_url
    out = tmp_path / "old"
    files = _run_old_pipeline(old_code, url, out)
    before = _row_counts(url)
    assert set(before) == set(migrate.initial_tables())
    assert (
        before["ev_charging_sessions"] > 0
        and before["ev_quarantined_files"] == 1
        and before["ev_rejected_messages"] == 1
    )
    assert migrate.current(url) is None
    with pytest.raises(SchemaBehindError, match="from before schema migrations.*ev-awareness db upgrade"):
        Warehouse(url).read(EV_CHARGING_SESSIONS)

    assert migrate.upgrade(url) == (None, migrate.head())

    assert migrate.schema_status(url) == (migrate.head(), migrate.head())
    after = _row_counts(url)
    assert {t: n for t, n in after.items() if t in before} == before
    assert after[EV_WAREHOUSE_SETTINGS.name] == 0
    # The old code paired and loaded every batch in the run that ingested it: nothing is pending.
    assert after["ev_batch_pairing"] == before["ev_ingest_batches"] and after["ev_load_days_pending"] == 0
    assert after["ev_batches_pending"] == 0
    # every table reads back through the new code exactly as the old code read it
    wh = Warehouse(url)
    try:
        for spec in ALL_TABLES:
            if spec.name not in before:  # tables later revisions add
                continue
            old = pl.read_parquet(out / f"{spec.name}.parquet")
            # The old columns hold the old values; columns later revisions add hold their defaults.
            assert _sorted(wh.read(spec).select(old.columns), spec.primary_key).equals(
                _sorted(old, spec.primary_key)
            ), spec.name
        # and the new code carries on: the same files again are already read, nothing changes
        paths = sorted((out / "landing").glob("*.json"))
        report = pipeline.ingest_batch(wh, "new-1", paths, pipeline.PipelineSettings())
        assert (report.files_read, report.files_already_read, report.accepted) == (files, files, 0)
        assert wh.read(EV_WAREHOUSE_SETTINGS)["value"].to_list() == ["America/New_York"]
    finally:
        wh.dispose()


def test_a_blank_database_is_refused_until_upgraded(blank_warehouse_url):
    url = blank_warehouse_url
    assert migrate.current(url) is None
    wh = Warehouse(url)
    with pytest.raises(SchemaBehindError, match=r"has no schema, the code needs \w+: run `ev-awareness db upgrade`"):
        wh.read(EV_CHARGING_SESSIONS)
    assert sa.inspect(wh.engine).get_table_names() == []  # the runtime created nothing

    assert migrate.upgrade(url, "0001") == (None, "0001")
    with pytest.raises(SchemaBehindError, match=f"is at schema revision 0001, the code needs {migrate.head()}"):
        Warehouse(url).count(EV_CHARGING_SESSIONS)

    assert migrate.upgrade(url) == ("0001", migrate.head())
    assert migrate.current(url) == migrate.head()
    tables = sorted(sa.inspect(wh.engine).get_table_names())
    assert migrate.upgrade(url) == (migrate.head(), migrate.head())  # twice: nothing to do
    assert sorted(sa.inspect(wh.engine).get_table_names()) == tables
    assert wh.read(EV_CHARGING_SESSIONS).is_empty()  # the refusal is not cached: now it works
    wh.dispose()


def test_history_and_head():
    history = migrate.history()
    assert [h.split()[0] for h in history][-2:] == ["0002", "0001"]
    # head() reads the version files without alembic: it agrees with alembic
    assert history[0].split()[0] == migrate.head() == migrate._script().get_current_head()
    assert migrate.known_revisions() == {rev.revision for rev in migrate._script().walk_revisions()}


def test_a_partial_pre_migration_database_is_not_adopted(tmp_path):
    url = f"sqlite:///{tmp_path / 'partial.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ev_ingest_batches (batch_id TEXT PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(migrate.AdoptionError, match="only some of the initial tables"):
        migrate.upgrade(url)
    assert migrate.current(url) is None


def test_messages_hide_passwords():
    assert "secret" not in migrate.display_url("postgresql+psycopg://ev:secret@db.example/ev")


def _sql_words(sql: str) -> str:
    """A predicate as comparable text: PostgreSQL gives it back parenthesised and in its own case."""
    return " ".join(sql.replace("(", " ").replace(")", " ").lower().split())


def test_the_declarations_and_the_migrations_agree(warehouse_url):
    """tables.py is what the code reads and writes; the migrations are what databases have. When
    they differ, a developer changed tables.py without writing a migration."""
    hint = (
        "ev_assets/warehouse/tables.py and the migrations disagree: write a migration "
        "(ev_assets/warehouse/migrations/versions/, see migrate.revision)"
    )
    engine = make_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            # PostgreSQL's month partitions (0022) are parts of their declared tables
            names = [n for n in inspector.get_table_names() if not migrate.is_month_partition(n)]
            found = set(names) - {migrate.VERSION_TABLE}
            declared = {spec.name for spec in ALL_TABLES}
            assert found == declared, (
                f"{hint}: tables only declared {sorted(declared - found)}, only migrated {sorted(found - declared)}"
            )
            for spec in ALL_TABLES:
                columns = {c["name"]: c for c in inspector.get_columns(spec.name)}
                assert set(columns) == set(spec.column_names), (
                    f"{hint}: {spec.name} columns only declared {sorted(set(spec.column_names) - set(columns))}, "
                    f"only migrated {sorted(set(columns) - set(spec.column_names))}"
                )
                for col in spec.columns:
                    nullable = col.nullable and col.name not in spec.primary_key
                    assert columns[col.name]["nullable"] == nullable, f"{hint}: {spec.name}.{col.name} nullability"
                for name in spec.code_point_order:  # read in ranges: they must sort by code point
                    collation = getattr(columns[name]["type"], "collation", None)
                    expected = "C" if conn.dialect.name == "postgresql" else None
                    assert collation == expected, f"{hint}: {spec.name}.{name} sorts by {collation}"
                pk = inspector.get_pk_constraint(spec.name)["constrained_columns"]
                key = spec.postgres_primary_key if conn.dialect.name == "postgresql" else spec.primary_key
                assert tuple(pk) == key, f"{hint}: {spec.name} primary key"
                indexes = {i["name"]: i for i in inspector.get_indexes(spec.name)}
                assert set(indexes) == spec.index_names, f"{hint}: {spec.name} indexes"
                for partial in spec.partial_indexes:
                    found = indexes[f"ix_{spec.name}_{partial.label}_{'_'.join(partial.columns)}"]
                    assert tuple(found["column_names"]) == partial.columns, f"{hint}: {spec.name} {partial.label} index"
                    where = found.get("dialect_options", {}).get(f"{conn.dialect.name}_where")
                    assert where is not None and _sql_words(str(where)) == _sql_words(partial.where), (
                        f"{hint}: {spec.name} {partial.label} index covers other rows ({where})"
                    )
            # everything else too (types, and comments where the database keeps them)
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": migrate.include_name}
            )
            assert compare_metadata(context, migrate.target_metadata()) == [], hint
    finally:
        engine.dispose()


def test_the_warehouse_keeps_its_time_zone(warehouse):
    warehouse.ensure_timezone("America/New_York")
    assert warehouse.read(EV_WAREHOUSE_SETTINGS).select("key", "value").rows() == [("timezone", "America/New_York")]
    warehouse.ensure_timezone("America/New_York")  # the same: fine
    restarted = Warehouse(warehouse.url)
    try:
        restarted.ensure_timezone("America/New_York")
        with pytest.raises(WarehouseSettingsError) as refused:
            restarted.ensure_timezone("Europe/Paris")
        assert str(refused.value) == (
            "this warehouse's days were computed in America/New_York, but EV_TIMEZONE is Europe/Paris: "
            "set EV_TIMEZONE=America/New_York, or rebuild the warehouse"
        )
        # every step checks it first
        paris = pipeline.PipelineSettings(timezone="Europe/Paris")
        with pytest.raises(WarehouseSettingsError):
            pipeline.update_daily_load(restarted, paris, date(2024, 6, 3), date(2024, 6, 3))
        with pytest.raises(WarehouseSettingsError):
            pipeline.ingest_batch(restarted, "b", [], paris)
    finally:
        restarted.dispose()
    assert warehouse.read(EV_WAREHOUSE_SETTINGS).height == 1
