"""Alembic environment: run by `ev_assets.warehouse.migrate`, which hands in the connection
(`config.attributes["connection"]`); online mode only (the warehouse is always reachable)."""

from __future__ import annotations

from alembic import context

from ev_assets.warehouse.migrate import include_name, target_metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the migrations through ev_assets.warehouse.migrate (it provides the connection)")
    context.configure(
        connection=connection,
        # Autogenerate (migrate.revision(..., autogenerate=True)) compares with the declarations.
        target_metadata=target_metadata(),
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
        # PostgreSQL's month partitions are parts of declared tables (migration 0022).
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported: run against the database")
run_migrations_online()
