"""One declaration per table: everything derived from it agrees, and the README keeps up."""

from __future__ import annotations

import sqlalchemy as sa

from ev_assets.defs.metadata import column_schema
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
        assert [c.name for c in column_schema(spec).columns] == spec.column_names
        assert tuple(c.name for c in table.primary_key.columns) == spec.primary_key
        assert all(c.description for c in spec.columns), spec.name


def test_the_upgraded_warehouse_has_every_declared_table(warehouse):
    warehouse.check_schema()
    names = set(sa.inspect(warehouse.engine).get_table_names())
    assert {spec.name for spec in ALL_TABLES} <= names
