"""The Dagster instance stored in PostgreSQL (EV_DAGSTER_STORAGE_URL, dagster-postgres): what
`ev-awareness init` writes into dagster.yaml, and a real `ev-awareness run` recording its runs in a
fresh PostgreSQL database instead of SQLite files under DAGSTER_HOME."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from ev_assets.instance_config import (
    EARLIER_POSTGRES_STORAGE,
    POSTGRES_STORAGE,
    REQUIRED,
    StorageConflict,
    batching_event_log,
    uses_postgres_storage,
    write_instance_config,
)
from ev_assets.settings import Settings
from ev_assets.warehouse.store import Warehouse
from ev_assets.warehouse.tables import EV_CHARGING_SESSIONS

from .conftest import POSTGRES_URL, _postgres_database, simulate
from .test_end_to_end import cli


def _load_days(env) -> set[str]:
    """The days transformer_daily_load holds, as partition keys."""
    warehouse = Warehouse(env["EV_WAREHOUSE_URL"])
    with warehouse.engine.connect() as conn:
        days = conn.execute(sa.text("SELECT DISTINCT load_date FROM transformer_daily_load")).scalars()
        return {d if isinstance(d, str) else d.isoformat() for d in days}


def _config(home) -> dict:
    return yaml.safe_load((home / "dagster.yaml").read_text())


def test_sqlite_stays_the_default(tmp_path):
    path, changed = write_instance_config(tmp_path)
    config = _config(tmp_path)
    assert "storage" not in config and set(REQUIRED) <= set(config)
    assert "+storage (postgres)" not in changed and not uses_postgres_storage(tmp_path)
    # Dagster's SQLite event log, with a batch path, in the files Dagster's default would use.
    assert config["event_log_storage"] == batching_event_log(tmp_path)
    assert config["event_log_storage"]["config"]["base_dir"] == str(tmp_path.resolve() / "history" / "runs")
    assert write_instance_config(tmp_path)[1] == []


def test_a_moved_home_keeps_its_event_logs_in_itself(tmp_path):
    write_instance_config(tmp_path / "old")
    (tmp_path / "old").rename(tmp_path / "new")
    assert write_instance_config(tmp_path / "new")[1] == ["~event_log_storage (SQLite, batched)"]
    assert _config(tmp_path / "new")["event_log_storage"] == batching_event_log(tmp_path / "new")


def test_postgres_storage_is_an_env_reference_and_upgrades_an_existing_file(tmp_path):
    # An instance written by an earlier init, with a value of the user's own.
    write_instance_config(tmp_path)
    config = _config(tmp_path)
    config["run_coordinator"]["config"]["max_concurrent_runs"] = 2
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))

    _, changed = write_instance_config(tmp_path, postgres_storage=True)
    assert changed == ["-event_log_storage (SQLite)", "+storage (postgres)"]
    upgraded = _config(tmp_path)
    # Dagster resolves `env:` when it opens the instance: the URL itself is in no file.
    assert {key: upgraded[key] for key in POSTGRES_STORAGE} == POSTGRES_STORAGE
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        assert upgraded[key]["config"] == {"postgres_url": {"env": "EV_DAGSTER_STORAGE_URL"}}, key
    assert upgraded["event_log_storage"]["class"] == "BatchingPostgresEventLogStorage"  # not SQLite's any more
    assert "storage" not in upgraded  # Dagster refuses it next to the three
    assert upgraded["run_coordinator"]["config"]["max_concurrent_runs"] == 2  # the user's value kept
    assert uses_postgres_storage(tmp_path)
    # Idempotent: nothing left to add.
    assert write_instance_config(tmp_path, postgres_storage=True)[1] == []


def test_the_postgres_storage_an_earlier_init_wrote_is_converted(tmp_path):
    """`storage: postgres:` (what init wrote before) becomes the same three storages, with the event
    log that batches a run's planned events: same database, same tables."""
    write_instance_config(tmp_path)
    config = _config(tmp_path)
    del config["event_log_storage"]
    config["storage"] = EARLIER_POSTGRES_STORAGE
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    assert uses_postgres_storage(tmp_path)

    assert write_instance_config(tmp_path, postgres_storage=True)[1] == ["~storage (postgres, batched event log)"]
    converted = _config(tmp_path)
    assert "storage" not in converted and {key: converted[key] for key in POSTGRES_STORAGE} == POSTGRES_STORAGE
    assert uses_postgres_storage(tmp_path)
    assert write_instance_config(tmp_path, postgres_storage=True)[1] == []


@pytest.mark.parametrize("key", ["storage", "event_log_storage"])
def test_a_storage_the_user_chose_is_not_overwritten(tmp_path, key):
    chosen = (
        {"sqlite": {"base_dir": str(tmp_path / "mine")}}
        if key == "storage"
        else {"module": "dagster.core.storage.event_log", "class": "SqliteEventLogStorage", "config": {"base_dir": "x"}}
    )
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({key: chosen}))
    before = (tmp_path / "dagster.yaml").read_text()
    with pytest.raises(StorageConflict, match=key):
        write_instance_config(tmp_path, postgres_storage=True)
    assert (tmp_path / "dagster.yaml").read_text() == before
    # Staying on SQLite, init adds its own keys but not its event log next to the user's storage.
    _, changed = write_instance_config(tmp_path)
    assert _config(tmp_path)[key] == chosen and not [c for c in changed if "storage" in c]


def test_the_storage_url_must_be_postgresql(monkeypatch):
    monkeypatch.setenv("EV_DAGSTER_STORAGE_URL", "sqlite:///elsewhere.db")
    with pytest.raises(ValueError, match="PostgreSQL"):
        Settings()
    # psycopg 3 (also SQLAlchemy 2.1's default driver) cannot send dagster-postgres's NOTIFY.
    for url in ("postgresql+psycopg://u@h/dagster", "postgresql://u@h/dagster"):
        monkeypatch.setenv("EV_DAGSTER_STORAGE_URL", url)
        with pytest.raises(ValueError, match="psycopg2"):
            Settings()
    monkeypatch.setenv("EV_DAGSTER_STORAGE_URL", "postgresql+psycopg2://u@h/dagster")
    assert Settings().dagster_storage_url == "postgresql+psycopg2://u@h/dagster"


@pytest.mark.skipif(not POSTGRES_URL, reason="needs EV_TEST_POSTGRES_URL (a PostgreSQL server)")
@pytest.mark.parametrize("blank_warehouse_url", ["postgresql"], indirect=True)  # the production pair
def test_a_run_against_a_postgres_instance_records_its_runs_there(env, small_utility, monkeypatch):
    home = env["DAGSTER_HOME"]
    instance_url, drop = _postgres_database()
    # Trust authentication ignores the password: it is here to show it is written nowhere.
    instance_url = (
        sa.engine.make_url(instance_url)
        .set(drivername="postgresql+psycopg2", password="s3cret-not-in-files")
        .render_as_string(hide_password=False)
    )
    try:
        # A deployment that started on SQLite (the default), then switches: init upgrades dagster.yaml.
        cli(env, "init")
        assert not uses_postgres_storage(home)
        sqlite_storages = sorted(home.rglob("*.db"))  # what the SQLite instance was
        with_storage = {**env, "EV_DAGSTER_STORAGE_URL": instance_url}
        out = cli(with_storage, "init")
        assert "+storage (postgres)" in out and "tables up to date" in out
        assert "s3cret-not-in-files" not in out
        assert {key: _config(home)[key] for key in POSTGRES_STORAGE} == POSTGRES_STORAGE
        assert "s3cret-not-in-files" not in (home / "dagster.yaml").read_text()

        # Three days: the daily load runs over a range, whose per-partition materializations Dagster
        # writes as one batch (DAGSTER_EVENT_BATCH_SIZE, set by the instance's event log).
        simulate(small_utility, env["EV_FEED_DIR"], days=3)
        cli(with_storage, "run")
        assert Warehouse(env["EV_WAREHOUSE_URL"]).count(EV_CHARGING_SESSIONS) > 0
        load_days = _load_days(env)
        assert len(load_days) >= 3, load_days

        # The instance, opened from that home as the daemon and the webserver open it, reports the runs.
        monkeypatch.setenv("EV_DAGSTER_STORAGE_URL", instance_url)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__module__.startswith("dagster_postgres")
            assert type(instance.event_log_storage).__name__ == "BatchingPostgresEventLogStorage"
            runs = instance.get_runs()
            assert {r.job_name for r in runs} == {
                "reference_job",
                "ingest_job",
                "daily_load_job",
                "premise_profile_job",
                "forecast_job",
                "planning_queue_job",
            }
            assert all(r.is_success for r in runs)
            assert all(instance.all_logs(r.run_id) for r in runs)
            # Batched, yet every asset of the load has one materialization per day, and the load
            # run one planned materialization per day (written as one batch at its creation).
            (load_run,) = [r for r in runs if r.job_name == "daily_load_job"]
            planned = instance.all_logs(load_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
            for asset in ("transformer_daily_load", "feeder_daily_load", "substation_daily_load"):
                records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
                partitions = [r.partition_key for r in records]
                assert len(partitions) == len(set(partitions)) and load_days <= set(partitions), (asset, partitions)
                planned_days = [
                    e.dagster_event.partition for e in planned if e.dagster_event.asset_key.path[-1] == asset
                ]
                assert sorted(planned_days) == sorted(partitions), (asset, planned_days)
        # Stored in that database, and in no SQLite file under DAGSTER_HOME.
        engine = sa.create_engine(instance_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == len(runs)
            assert conn.execute(sa.text("SELECT count(*) FROM event_logs")).scalar_one() > 0
        engine.dispose()
        assert sorted(home.rglob("*.db")) == sqlite_storages  # no run's event log file
        engine = sa.create_engine(f"sqlite:///{home / 'history' / 'runs.db'}")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 0
        engine.dispose()

        # Without the URL, the CLI says what is missing instead of failing deep inside Dagster.
        monkeypatch.delenv("EV_DAGSTER_STORAGE_URL")
        assert "set EV_DAGSTER_STORAGE_URL" in cli(env, "init", expect=2)
    finally:
        drop()


def test_init_creates_the_sqlite_instance_storage_before_any_process_opens_it(env):
    """Dagster creates and stamps its SQLite storages when a process first opens a blank home;
    the daemon and its code server doing it at the same moment left `alembic_version` with two
    rows ("more than one head present") and a daemon that never ran a sensor. `init` creates them
    once, so every process started afterwards opens storages that are already at head."""
    home = env["DAGSTER_HOME"]
    cli(env, "init")
    storages = {p.relative_to(home).as_posix() for p in home.rglob("*.db")}
    assert {"history/runs.db", "schedules/schedules.db"} <= storages, storages
    for name in ("history/runs.db", "schedules/schedules.db"):
        engine = sa.create_engine(f"sqlite:///{home / name}")
        with engine.connect() as conn:
            assert len(conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()) == 1, name
        engine.dispose()
    # Idempotent: a second init changes no storage.
    stamps = {p: p.stat().st_mtime_ns for p in home.rglob("*.db")}
    cli(env, "init")
    assert {p: p.stat().st_mtime_ns for p in home.rglob("*.db")} == stamps


def test_a_range_run_on_the_sqlite_instance_stores_every_materialization_through_the_batch_path(env, small_utility):
    """A daily-load run over a range hands its planned and its per-partition materializations to the event log as
    batches (DAGSTER_EVENT_BATCH_SIZE); on SQLite `BatchingSqliteEventLogStorage` writes each batch
    in one transaction. Every asset of the load keeps one materialization per day, in the run's own
    log and in the cross-run index (its partition tags are what the UI's partition status reads)."""
    home = env["DAGSTER_HOME"]
    cli(env, "init")
    simulate(small_utility, env["EV_FEED_DIR"], days=3)
    cli(env, "run")
    load_days = _load_days(env)
    assert len(load_days) >= 3, load_days
    assets = [
        f"{level}_{kind}_load" for level in ("transformer", "feeder", "substation") for kind in ("daily", "interval")
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "BatchingSqliteEventLogStorage"
        (load_run,) = [r for r in instance.get_runs() if r.job_name == "daily_load_job"]
        run_materializations = [
            e.dagster_event
            for e in instance.all_logs(load_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        ]
        partitions_in_run = {e.partition for e in run_materializations}
        assert load_days <= partitions_in_run
        assert len(run_materializations) == len(assets) * len(partitions_in_run)
        for asset in assets:
            key = dg.AssetKey(asset)
            partitions = [r.partition_key for r in instance.fetch_materializations(key, limit=1000).records]
            assert sorted(partitions) == sorted(partitions_in_run), asset
            assert instance.get_materialized_partitions(key) == partitions_in_run, asset
            assert instance.get_latest_materialization_event(key).dagster_event.partition == max(partitions_in_run)
        # The run's planned materializations (written as one batch at its creation): every asset and
        # day, in the run's log and in the index the UI and the sensors read.
        planned = instance.all_logs(load_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        assert sorted((e.dagster_event.asset_key.path[-1], e.dagster_event.partition) for e in planned) == sorted(
            (asset, day) for asset in assets for day in partitions_in_run
        )
        for asset in assets:
            for day in partitions_in_run:
                info = instance.event_log_storage.get_latest_planned_materialization_info(dg.AssetKey(asset), day)
                assert info.run_id == load_run.run_id, (asset, day)


@pytest.mark.parametrize(
    ("exported", "configured", "expected"), [(None, None, "1000"), ("0", None, "0"), (None, 250, "250")]
)
def test_a_process_that_opens_the_instance_batches_the_events_of_the_runs_it_creates(
    env, exported, configured, expected
):
    """The daemon creates the runs its sensors request and records their planned materializations
    (one per asset and partition) in its own process, which imports no code location: the event
    log `init` configures turns Dagster's event batching on in any process that opens the
    instance, with the batch size of its configuration (`event_batch_size` in dagster.yaml). A
    value the operator exports wins (0: off)."""
    cli(env, "init")
    config = _config(env["DAGSTER_HOME"])
    assert config["event_log_storage"]["config"]["event_batch_size"] == 1000  # written by init
    if configured is not None:
        config["event_log_storage"]["config"]["event_batch_size"] = configured
        (env["DAGSTER_HOME"] / "dagster.yaml").write_text(yaml.safe_dump(config))
    environment = {k: v for k, v in os.environ.items() if k != "DAGSTER_EVENT_BATCH_SIZE"}
    environment.update({k: str(v) for k, v in env.items() if k.isupper()})
    if exported is not None:
        environment["DAGSTER_EVENT_BATCH_SIZE"] = exported
    opens_the_instance = (
        "import os, dagster as dg\n"
        "with dg.DagsterInstance.get() as instance:\n"
        "    print(type(instance.event_log_storage).__name__, os.environ.get('DAGSTER_EVENT_BATCH_SIZE'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", opens_the_instance], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["BatchingSqliteEventLogStorage", expected]


@pytest.mark.skipif(not POSTGRES_URL, reason="needs EV_TEST_POSTGRES_URL (a PostgreSQL server)")
def test_a_postgres_instance_an_earlier_init_wrote_keeps_its_runs_once_converted(tmp_path, monkeypatch):
    """`storage: postgres:` and the three storages init writes now read the same tables: the runs,
    logs and materializations recorded before the conversion are there after it."""
    url, drop = _postgres_database()
    monkeypatch.setenv(
        "EV_DAGSTER_STORAGE_URL",
        sa.engine.make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False),
    )

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2024-06-01"))
    def probe() -> None:
        return None

    try:
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": EARLIER_POSTGRES_STORAGE}))
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            before = dg.materialize([probe], instance=instance, partition_key="2024-06-02").run_id
        assert write_instance_config(tmp_path, postgres_storage=True)[1][0] == "~storage (postgres, batched event log)"
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.event_log_storage).__name__ == "BatchingPostgresEventLogStorage"
            assert instance.get_run_by_id(before).is_success
            after = dg.materialize([probe], instance=instance, partition_key="2024-06-03").run_id
            assert [r.run_id for r in instance.get_runs()] == [after, before]
            assert instance.get_materialized_partitions(probe.key) == {"2024-06-02", "2024-06-03"}
            assert instance.all_logs(before, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    finally:
        drop()
