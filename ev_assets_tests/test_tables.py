"""One declaration per table: everything derived from it agrees, and the README keeps up."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from ev_assets.warehouse import data_dictionary
from ev_assets.warehouse.tables import ALL_TABLES


def test_readme_generated_sections_are_current():
    text = data_dictionary.README.read_text()
    assert data_dictionary.render(text) == text, "README is out of date: run `uv run python -m ev_assets.warehouse.data_dictionary`"


def test_every_table_derives_consistently():
    metadata = sa.MetaData()
    for spec in ALL_TABLES:
        table = spec.sqlalchemy_table(metadata)
        assert [c.name for c in table.columns] == spec.column_names
        assert list(spec.pandera_schema().columns) == spec.column_names
        assert [c.name for c in spec.dagster_schema().columns] == spec.column_names
        assert tuple(c.name for c in table.primary_key.columns) == spec.primary_key
        assert all(c.description for c in spec.columns), spec.name


def test_tables_create_on_the_warehouse(warehouse):
    warehouse.create_tables()
    names = set(sa.inspect(warehouse.engine).get_table_names())
    assert {spec.name for spec in ALL_TABLES} <= names


def test_an_outdated_table_is_refused_and_missing_indexes_are_added(warehouse_url):
    from ev_assets.warehouse.store import Warehouse

    engine = sa.create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ev_ingest_batches (batch_id TEXT PRIMARY KEY)"))
    with pytest.raises(RuntimeError, match="ev_ingest_batches lacks columns"):
        Warehouse(warehouse_url).create_tables()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE ev_ingest_batches"))
        conn.execute(sa.text("DROP INDEX ix_ev_feed_files_file_sha256"))
    Warehouse(warehouse_url).create_tables()
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("ev_feed_files")}
    assert "ix_ev_feed_files_file_sha256" in indexes
    engine.dispose()
