"""Shared fixtures: real warehouses (SQLite always; PostgreSQL when EV_TEST_POSTGRES_URL is set),
a small synthetic utility and feed, and an isolated environment per test."""

from __future__ import annotations

import os
import uuid
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from ev_assets import pipeline
from ev_assets.core.reference_extracts import write_reference_extracts
from ev_assets.synthetic import simulator, utility
from ev_assets.warehouse import migrate
from ev_assets.warehouse.store import Warehouse

POSTGRES_URL = os.environ.get("EV_TEST_POSTGRES_URL")

# The tests' feeds lie in the past (2024): the daily partitions start before them in every process
# a test starts, whatever day `ev-awareness init` runs on (test_user_view checks what init records
# when this is unset).
os.environ.setdefault("EV_PARTITIONS_START", "2010-01-01")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])

SIM_START = date(2024, 6, 3)


@pytest.fixture(scope="session")
def small_utility() -> dict[str, pl.DataFrame]:
    return utility.generate_utility(meters=300, seed=11)


def _postgres_database() -> tuple[str, callable]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"ev_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=BACKENDS)
def blank_warehouse_url(request, tmp_path: Path):
    """A fresh, empty database (no tables, no schema revision) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ev.sqlite'}"
        return
    url, drop = _postgres_database()
    yield url
    drop()


@pytest.fixture
def warehouse_url(blank_warehouse_url: str):
    """A fresh database upgraded to the code's schema revision (what `ev-awareness db upgrade` does)."""
    migrate.upgrade(blank_warehouse_url)
    return blank_warehouse_url


@pytest.fixture
def warehouse(warehouse_url: str):
    wh = Warehouse(warehouse_url)
    yield wh
    wh.dispose()


@pytest.fixture
def env(tmp_path: Path, warehouse_url: str, small_utility, monkeypatch):
    """Environment variables of an isolated project: landing folder, reference data, warehouse,
    DAGSTER_HOME, all under tmp_path."""
    paths = {
        "EV_FEED_DIR": tmp_path / "landing",
        "EV_REFERENCE_DIR": tmp_path / "reference",
        "DAGSTER_HOME": tmp_path / "dagster_home",
    }
    for name, path in paths.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("EV_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("EV_TIMEZONE", "America/New_York")
    write_reference_extracts(small_utility, paths["EV_REFERENCE_DIR"])
    return {**paths, "EV_WAREHOUSE_URL": warehouse_url, "tmp": tmp_path}


def simulate(small_utility, landing: Path, days: int = 2, seed: int = 3, start: date = SIM_START) -> pl.DataFrame:
    """Write a feed for the span and return the simulator's ground truth sessions."""
    sessions = simulator.simulate_sessions(small_utility, start, days, seed)
    simulator.write_feed(simulator.session_messages(sessions, seed), landing)
    return sessions


@pytest.fixture
def settings() -> pipeline.PipelineSettings:
    return pipeline.PipelineSettings()
