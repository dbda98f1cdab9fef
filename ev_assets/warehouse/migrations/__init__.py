"""Alembic migrations of the warehouse (env.py, versions/). Driven by `ev_assets.warehouse.migrate`:
no alembic.ini, the configuration is built in code and the connection handed in."""
