"""One declaration per table: everything derived from it agrees, and the generated docs keep up."""

from __future__ import annotations

import sqlalchemy as sa

from ev_assets.defs.metadata import column_schema
from ev_assets.warehouse import data_dictionary
from ev_assets.warehouse.tables import ALL_TABLES


def test_generated_doc_sections_are_current():
    for path, sections in data_dictionary.SECTIONS.items():
        text = path.read_text()
        assert data_dictionary.render(text, sections) == text, (
            f"{path.name} is out of date: run `uv run python -m ev_assets.warehouse.data_dictionary`"
        )


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


def test_read_in_seeks_an_index_in_one_statement_and_finds_what_an_in_list_finds(warehouse):
    """read_in of a column an index starts with is one statement whatever the number of values (an
    IN list of IN_CHUNK values per statement cost 0.48 s for 101,498 ids); its rows are the ones a
    filter of the whole table gives, with duplicates among the values, values that match nothing
    and an extra condition; a column no index starts with gives the same rows through IN lists."""
    from datetime import UTC, datetime

    import polars as pl

    from ev_assets.warehouse.store import IN_CHUNK
    from ev_assets.warehouse.tables import EV_FEED_FILES

    n = 2 * IN_CHUNK + 7
    files = EV_FEED_FILES.conform(
        pl.DataFrame(
            {
                "file_name": [f"f{i:05d}.json" for i in range(n)],
                "file_sha256": [f"{i % 50:064x}" for i in range(n)],  # 50 contents, each under many names
                "batch_id": [f"b{i % 3}" for i in range(n)],
                "size_bytes": list(range(n)),
                "status": ["parsed" if i % 4 else "quarantined" for i in range(n)],
                "records": [i % 7 for i in range(n)],
                "read_at": [datetime(2024, 6, 1, tzinfo=UTC)] * n,
            }
        )
    )
    with warehouse.transaction() as conn:
        warehouse.insert(conn, EV_FEED_FILES, files)
    names = [f"f{i:05d}.json" for i in range(0, n, 2)] + ["f00002.json", "absent.json"]
    statements: list[str] = []
    sa.event.listen(warehouse.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    lookups = {
        "file_name": names,  # leads the primary key
        "file_sha256": [f"{k:064x}" for k in (1, 1, 2, 99)],  # leads an index
        "status": ["quarantined", "nothing"],  # no index starts with it: IN lists
    }
    for column, values in lookups.items():
        for where in (None, warehouse.column(EV_FEED_FILES, "batch_id") == "b1"):
            statements.clear()
            got = warehouse.read_in(EV_FEED_FILES, column, values, where=where)
            expected = files.filter(pl.col(column).is_in(values))
            if where is not None:
                expected = expected.filter(pl.col("batch_id") == "b1")
            key = ["file_name", "file_sha256"]
            assert got.sort(key).equals(expected.sort(key)), (column, where)
            assert got.schema == EV_FEED_FILES.polars_schema
            reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
            if column != "status":
                assert len(reads) == 1, (column, reads)
    assert warehouse.read_in(EV_FEED_FILES, "file_name", []).is_empty()
