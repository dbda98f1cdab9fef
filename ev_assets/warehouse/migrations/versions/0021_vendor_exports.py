"""ev_vendor_exports (issue 26 item 10): the vendor exports landed, in the warehouse, so the gap
sensor and vendor_export_gap read what an export landed from the warehouse, not from another
asset's materialization metadata. Exports landed before this revision have no row: their gap is
not computed again (it was when they were ingested); a new export of the day is.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-08

Written out explicitly: a migration is a frozen step, it must not read ev_assets.warehouse.tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_TABLE = "ev_vendor_exports"
_INDEX = "ix_ev_vendor_exports_received_day_landed_at"


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("job_id", sa.Text(), primary_key=True, nullable=False, comment="The vendor's export job id."),
        sa.Column(
            "received_day",
            sa.Date(),
            nullable=False,
            comment="Received day (UTC) the export holds: ReceivedTime in [day, day+1).",
        ),
        sa.Column(
            "file_prefix",
            sa.Text(),
            nullable=False,
            comment="Its landing files' names start with this (export-<day>-<jobId>-).",
        ),
        sa.Column("files", sa.BigInteger(), nullable=False, comment="Landing files the export wrote."),
        sa.Column("records", sa.BigInteger(), nullable=False, comment="Records in those files."),
        sa.Column(
            "filetype",
            sa.Text(),
            nullable=False,
            comment="File type the vendor exported (Parquet, Orc, Json or Csv).",
        ),
        sa.Column(
            "landed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When its files were in the landing folder: the day's latest export is the newest.",
        ),
        comment=(
            "One row per vendor batch export landed (vendor_export_files): its received day (UTC), job id, the "
            "prefix of its landing files' names and how many it landed. Written by the export step once its files "
            "are in the landing folder; the gap sensor and vendor_export_gap read the day's latest export here "
            "(the file ledger then says whether all its files are ingested)."
        ),
    )
    op.create_index(_INDEX, _TABLE, ["received_day", "landed_at"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name=_TABLE)
    op.drop_table(_TABLE)
