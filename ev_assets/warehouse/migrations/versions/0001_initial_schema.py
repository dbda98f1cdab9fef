"""initial schema (the tables of commit 80cbb5f)

Revision ID: 0001
Revises:
Create Date: 2026-11-25

A frozen copy of the schema that `Warehouse.create_tables()` created before migrations existed
(ev_assets/tables.py at commit 80cbb5f): every table, column type, nullability, primary key, index
and comment, written out so that later changes to the declarations do not change this step.
A database that already holds these tables without an `alembic_version` table is adopted: it is
stamped at 0001 instead of running this step (see ev_assets.warehouse.migrate.upgrade).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The tables this revision creates: the adoption check of a pre-migration warehouse uses them.
TABLES = (
    "ev_charging_events",
    "ev_charging_sessions",
    "transformer_daily_load",
    "feeder_daily_load",
    "substation_daily_load",
    "ev_ingest_batches",
    "ev_feed_files",
    "ev_rejected_messages",
    "ev_quarantined_files",
    "ref_substations",
    "ref_feeders",
    "ref_transformers",
    "ref_premises",
    "ref_service_points",
    "ref_meters",
)


def upgrade() -> None:
    op.create_table(
        "ev_charging_events",
        sa.Column(
            "message_id",
            sa.Text(),
            nullable=False,
            primary_key=True,
            comment="Deterministic id of the message: hash of meter, type and message time.",
        ),
        sa.Column("message_type", sa.Text(), nullable=False, comment="start or end."),
        sa.Column("meter_id", sa.Text(), nullable=False, comment="MeterID as reported."),
        sa.Column("meter_number", sa.Text(), nullable=True, comment="MeterNumber as reported."),
        sa.Column("esn", sa.Text(), nullable=True, comment="ESN as reported."),
        sa.Column(
            "meter_key",
            sa.BigInteger(),
            nullable=True,
            comment="Surrogate key of the meter row in effect on the event date (ref_meters); null when the meter is not (yet) in the reference data.",
        ),
        sa.Column(
            "service_point_id",
            sa.Text(),
            nullable=True,
            comment="Service point as of the event date: from the reference data when the meter is known, else as reported.",
        ),
        sa.Column(
            "premise_id",
            sa.Text(),
            nullable=True,
            comment="Premise as of the event date: from the reference data when known, else as reported.",
        ),
        sa.Column(
            "transformer_id",
            sa.Text(),
            nullable=True,
            comment="Transformer as of the event date: from the reference data (GIS) when known, else as reported.",
        ),
        sa.Column(
            "feeder_id",
            sa.Text(),
            nullable=True,
            comment="Feeder of the transformer as of the event date; null when not enriched.",
        ),
        sa.Column(
            "substation_id",
            sa.Text(),
            nullable=True,
            comment="Substation of the feeder as of the event date; null when not enriched.",
        ),
        sa.Column(
            "enrichment_status",
            sa.Text(),
            nullable=False,
            comment="enriched, or meter_unknown (accepted, waiting for the reference data to catch up).",
        ),
        sa.Column(
            "reported_service_point_id", sa.Text(), nullable=True, comment="ServicePointID as the agent reported it."
        ),
        sa.Column("reported_premise_id", sa.Text(), nullable=True, comment="PremiseID as the agent reported it."),
        sa.Column(
            "reported_transformer_id", sa.Text(), nullable=True, comment="TransformerID as the agent reported it."
        ),
        sa.Column(
            "message_time",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="The time the message reports: ChargeStartTime of a start, ChargeEndTime of an end.",
        ),
        sa.Column("message_date", sa.Date(), nullable=False, comment="Local date (EV_TIMEZONE) of message_time."),
        sa.Column(
            "received_time",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="ReceivedTime: when the platform received the message.",
        ),
        sa.Column(
            "charge_start_time", sa.DateTime(timezone=True), nullable=True, comment="ChargeStartTime (start messages)."
        ),
        sa.Column(
            "charge_end_time", sa.DateTime(timezone=True), nullable=True, comment="ChargeEndTime (end messages)."
        ),
        sa.Column("charge_w", sa.Float(), nullable=True, comment="ChargeW, watts (start messages)."),
        sa.Column(
            "charge_duration",
            sa.Float(),
            nullable=True,
            comment="ChargeDuration as reported, in the feed's unit (end messages).",
        ),
        sa.Column("charge_energy_wh", sa.Float(), nullable=True, comment="ChargeEnergy, watt-hours (end messages)."),
        sa.Column(
            "extra_fields",
            sa.Text(),
            nullable=True,
            comment="Fields the spec does not define, as JSON; null when none.",
        ),
        sa.Column("batch_id", sa.Text(), nullable=False, comment="Micro-batch that accepted the message."),
        sa.Column("file_name", sa.Text(), nullable=False, comment="Landing file the message came in."),
        sa.Column(
            "record_index", sa.BigInteger(), nullable=False, comment="Position of the record in its file (0-based)."
        ),
        sa.Column(
            "ingested_at", sa.DateTime(timezone=True), nullable=False, comment="When the pipeline accepted the message."
        ),
        comment="Every accepted agent message, once: the start and end messages of charging sessions, typed, in UTC, deduplicated on (meter_id, message_type, message_time) and enriched with the reference data as of the message date.",
    )
    op.create_index("ix_ev_charging_events_meter_id_message_time", "ev_charging_events", ["meter_id", "message_time"])
    op.create_index("ix_ev_charging_events_batch_id", "ev_charging_events", ["batch_id"])
    op.create_index("ix_ev_charging_events_message_date", "ev_charging_events", ["message_date"])
    op.create_table(
        "ev_charging_sessions",
        sa.Column(
            "session_id",
            sa.Text(),
            nullable=False,
            primary_key=True,
            comment="Deterministic id: hash of meter and start time (end time for end_only).",
        ),
        sa.Column("meter_id", sa.Text(), nullable=False, comment="MeterID."),
        sa.Column(
            "meter_key",
            sa.BigInteger(),
            nullable=True,
            comment="Surrogate key of the meter row in effect on the event date (ref_meters); null when the meter is not (yet) in the reference data.",
        ),
        sa.Column(
            "service_point_id",
            sa.Text(),
            nullable=True,
            comment="Service point as of the event date: from the reference data when the meter is known, else as reported.",
        ),
        sa.Column(
            "premise_id",
            sa.Text(),
            nullable=True,
            comment="Premise as of the event date: from the reference data when known, else as reported.",
        ),
        sa.Column(
            "transformer_id",
            sa.Text(),
            nullable=True,
            comment="Transformer as of the event date: from the reference data (GIS) when known, else as reported.",
        ),
        sa.Column(
            "feeder_id",
            sa.Text(),
            nullable=True,
            comment="Feeder of the transformer as of the event date; null when not enriched.",
        ),
        sa.Column(
            "substation_id",
            sa.Text(),
            nullable=True,
            comment="Substation of the feeder as of the event date; null when not enriched.",
        ),
        sa.Column(
            "enrichment_status",
            sa.Text(),
            nullable=False,
            comment="enriched, or meter_unknown (accepted, waiting for the reference data to catch up).",
        ),
        sa.Column("status", sa.Text(), nullable=False, comment="complete, start_only or end_only."),
        sa.Column(
            "event_date",
            sa.Date(),
            nullable=False,
            comment="Local date (EV_TIMEZONE) of the session start (of the end for end_only).",
        ),
        sa.Column(
            "start_time", sa.DateTime(timezone=True), nullable=True, comment="ChargeStartTime of the start message."
        ),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True, comment="ChargeEndTime of the end message."),
        sa.Column(
            "duration_h",
            sa.Float(),
            nullable=True,
            comment="end_time - start_time, hours (derived from the timestamps, not the reported duration).",
        ),
        sa.Column("charge_w", sa.Float(), nullable=True, comment="ChargeW of the start message, watts."),
        sa.Column("energy_wh", sa.Float(), nullable=True, comment="ChargeEnergy of the end message, watt-hours."),
        sa.Column(
            "average_kw",
            sa.Float(),
            nullable=True,
            comment="energy_wh / duration_h / 1000: the load used for planning aggregates.",
        ),
        sa.Column(
            "reported_duration",
            sa.Float(),
            nullable=True,
            comment="ChargeDuration of the end message, in the feed's unit.",
        ),
        sa.Column("start_message_id", sa.Text(), nullable=True, comment="message_id of the start message."),
        sa.Column("end_message_id", sa.Text(), nullable=True, comment="message_id of the end message."),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the pipeline last wrote this session.",
        ),
        comment="Charging sessions paired from start and end messages per meter. Event time is the session start (spec). status: complete (start and end), start_only (charging, or its end never came), end_only (its start never came).",
    )
    op.create_index("ix_ev_charging_sessions_meter_id_start_time", "ev_charging_sessions", ["meter_id", "start_time"])
    op.create_index("ix_ev_charging_sessions_meter_id_end_time", "ev_charging_sessions", ["meter_id", "end_time"])
    op.create_index("ix_ev_charging_sessions_event_date", "ev_charging_sessions", ["event_date"])
    op.create_index(
        "ix_ev_charging_sessions_transformer_id_event_date", "ev_charging_sessions", ["transformer_id", "event_date"]
    )
    op.create_table(
        "transformer_daily_load",
        sa.Column(
            "transformer_id",
            sa.Text(),
            nullable=False,
            primary_key=True,
            comment="Distribution transformer identifier.",
        ),
        sa.Column(
            "load_date",
            sa.Date(),
            nullable=False,
            primary_key=True,
            comment="Local date (EV_TIMEZONE): the daily partition.",
        ),
        sa.Column(
            "feeder_id",
            sa.Text(),
            nullable=True,
            comment="Feeder of the transformer on this day; null when not in the reference data.",
        ),
        sa.Column("substation_id", sa.Text(), nullable=True, comment="Substation of the feeder on this day."),
        sa.Column(
            "kva_rating",
            sa.Float(),
            nullable=True,
            comment="Nameplate rating, kVA; null when not in the reference data.",
        ),
        sa.Column(
            "peak_kva",
            sa.Float(),
            nullable=True,
            comment="peak_kw / the configured power factor (EV_POWER_FACTOR, default 0.9).",
        ),
        sa.Column(
            "utilization",
            sa.Float(),
            nullable=True,
            comment="peak_kva / kva_rating: EV load alone as a share of the rating.",
        ),
        sa.Column("session_count", sa.BigInteger(), nullable=False, comment="Sessions that started on this day."),
        sa.Column("ev_count", sa.BigInteger(), nullable=False, comment="Distinct meters (EVs) charging on this day."),
        sa.Column("energy_kwh", sa.Float(), nullable=False, comment="EV energy delivered during this day, kWh."),
        sa.Column(
            "peak_kw",
            sa.Float(),
            nullable=False,
            comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
        ),
        sa.Column(
            "peak_interval_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval of the peak.",
        ),
        sa.Column("average_kw", sa.Float(), nullable=False, comment="energy_kwh / 24 h."),
        sa.Column("load_factor", sa.Float(), nullable=True, comment="average_kw / peak_kw."),
        sa.Column(
            "diversity_factor",
            sa.Float(),
            nullable=True,
            comment="Sum of each EV's own 15-minute peak / coincident peak (>= 1).",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When this row was computed."),
        comment="EV charging load per distribution transformer and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
    )
    op.create_index("ix_transformer_daily_load_load_date", "transformer_daily_load", ["load_date"])
    op.create_table(
        "feeder_daily_load",
        sa.Column("feeder_id", sa.Text(), nullable=False, primary_key=True, comment="Feeder identifier."),
        sa.Column(
            "load_date",
            sa.Date(),
            nullable=False,
            primary_key=True,
            comment="Local date (EV_TIMEZONE): the daily partition.",
        ),
        sa.Column("substation_id", sa.Text(), nullable=True, comment="Substation of the feeder on this day."),
        sa.Column("session_count", sa.BigInteger(), nullable=False, comment="Sessions that started on this day."),
        sa.Column("ev_count", sa.BigInteger(), nullable=False, comment="Distinct meters (EVs) charging on this day."),
        sa.Column("energy_kwh", sa.Float(), nullable=False, comment="EV energy delivered during this day, kWh."),
        sa.Column(
            "peak_kw",
            sa.Float(),
            nullable=False,
            comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
        ),
        sa.Column(
            "peak_interval_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval of the peak.",
        ),
        sa.Column("average_kw", sa.Float(), nullable=False, comment="energy_kwh / 24 h."),
        sa.Column("load_factor", sa.Float(), nullable=True, comment="average_kw / peak_kw."),
        sa.Column(
            "diversity_factor",
            sa.Float(),
            nullable=True,
            comment="Sum of each EV's own 15-minute peak / coincident peak (>= 1).",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When this row was computed."),
        comment="EV charging load per feeder and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
    )
    op.create_index("ix_feeder_daily_load_load_date", "feeder_daily_load", ["load_date"])
    op.create_table(
        "substation_daily_load",
        sa.Column("substation_id", sa.Text(), nullable=False, primary_key=True, comment="Substation identifier."),
        sa.Column(
            "load_date",
            sa.Date(),
            nullable=False,
            primary_key=True,
            comment="Local date (EV_TIMEZONE): the daily partition.",
        ),
        sa.Column("session_count", sa.BigInteger(), nullable=False, comment="Sessions that started on this day."),
        sa.Column("ev_count", sa.BigInteger(), nullable=False, comment="Distinct meters (EVs) charging on this day."),
        sa.Column("energy_kwh", sa.Float(), nullable=False, comment="EV energy delivered during this day, kWh."),
        sa.Column(
            "peak_kw",
            sa.Float(),
            nullable=False,
            comment="Coincident peak: the largest 15-minute average of the summed EV load, kW.",
        ),
        sa.Column(
            "peak_interval_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="Start of the 15-minute interval of the peak.",
        ),
        sa.Column("average_kw", sa.Float(), nullable=False, comment="energy_kwh / 24 h."),
        sa.Column("load_factor", sa.Float(), nullable=True, comment="average_kw / peak_kw."),
        sa.Column(
            "diversity_factor",
            sa.Float(),
            nullable=True,
            comment="Sum of each EV's own 15-minute peak / coincident peak (>= 1).",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="When this row was computed."),
        comment="EV charging load per substation and local day (EV_TIMEZONE), for planning models. Loads are counted in the 15-minute intervals they occur in (a session past midnight loads the next day); sessions are counted on their event date (start). Complete sessions only.",
    )
    op.create_index("ix_substation_daily_load_load_date", "substation_daily_load", ["load_date"])
    op.create_table(
        "ev_ingest_batches",
        sa.Column(
            "batch_id", sa.Text(), nullable=False, primary_key=True, comment="Micro-batch id (the sensor's run key)."
        ),
        sa.Column("run_id", sa.Text(), nullable=True, comment="Dagster run that processed it."),
        sa.Column("files_read", sa.BigInteger(), nullable=False, comment="Files read."),
        sa.Column("files_parsed", sa.BigInteger(), nullable=False, comment="Files parsed (strict JSON or repaired)."),
        sa.Column(
            "files_repaired",
            sa.BigInteger(),
            nullable=False,
            comment="Of the parsed files, those that needed trailing commas removed.",
        ),
        sa.Column(
            "files_quarantined",
            sa.BigInteger(),
            nullable=False,
            comment="Files that could not be parsed, kept whole in ev_quarantined_files.",
        ),
        sa.Column(
            "files_already_read",
            sa.BigInteger(),
            nullable=False,
            comment="Files skipped because the file ledger already holds the same content.",
        ),
        sa.Column("records_read", sa.BigInteger(), nullable=False, comment="Records read from the parsed files."),
        sa.Column("accepted", sa.BigInteger(), nullable=False, comment="Records accepted into ev_charging_events."),
        sa.Column(
            "duplicates",
            sa.BigInteger(),
            nullable=False,
            comment="Records identical in meaning to one already accepted.",
        ),
        sa.Column("rejected", sa.BigInteger(), nullable=False, comment="Records quarantined in ev_rejected_messages."),
        sa.Column("reconciled", sa.Boolean(), nullable=False, comment="Whether both identities hold."),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, comment="When the batch was processed."),
        comment="The batch ledger: one row per micro-batch with the counts that prove nothing is lost: records_read = accepted + duplicates + rejected, files_read = files_parsed + files_quarantined.",
    )
    op.create_table(
        "ev_feed_files",
        sa.Column("file_name", sa.Text(), nullable=False, primary_key=True, comment="File name in the landing folder."),
        sa.Column("file_sha256", sa.Text(), nullable=False, primary_key=True, comment="SHA-256 of the file's bytes."),
        sa.Column("batch_id", sa.Text(), nullable=False, comment="Micro-batch that read it."),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False, comment="Size in bytes."),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="parsed, repaired (valid once trailing commas were removed) or quarantined.",
        ),
        sa.Column(
            "records", sa.BigInteger(), nullable=False, comment="Records read from the file (0 when quarantined)."
        ),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False, comment="When it was read."),
        comment="Every landing file the pipeline has read, once per content (name and SHA-256): the file ledger that makes replays no-ops.",
    )
    op.create_index("ix_ev_feed_files_batch_id", "ev_feed_files", ["batch_id"])
    op.create_index("ix_ev_feed_files_file_sha256", "ev_feed_files", ["file_sha256"])
    op.create_table(
        "ev_rejected_messages",
        sa.Column(
            "rejection_id",
            sa.Text(),
            nullable=False,
            primary_key=True,
            comment="Deterministic id: hash of file content and record position.",
        ),
        sa.Column("batch_id", sa.Text(), nullable=False, comment="Micro-batch that quarantined it."),
        sa.Column("file_name", sa.Text(), nullable=False, comment="Landing file it came in."),
        sa.Column(
            "record_index", sa.BigInteger(), nullable=False, comment="Position of the record in its file (0-based)."
        ),
        sa.Column("meter_id", sa.Text(), nullable=True, comment="MeterID as received, when readable."),
        sa.Column("raw_record", sa.Text(), nullable=False, comment="The record as received, as JSON."),
        sa.Column(
            "reason_codes",
            sa.Text(),
            nullable=False,
            comment="Comma-separated codes of every failed rule (see README).",
        ),
        sa.Column(
            "reasons",
            sa.Text(),
            nullable=False,
            comment="JSON list of {code, field, message}: every failed rule in words.",
        ),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False, comment="When it was quarantined."),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="quarantined, or replayed (accepted or counted as duplicate on a replay).",
        ),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True, comment="When a replay released it."),
        comment="Quarantined records: each with the raw record as received, where it came from and every rule it failed.",
    )
    op.create_index("ix_ev_rejected_messages_batch_id", "ev_rejected_messages", ["batch_id"])
    op.create_index("ix_ev_rejected_messages_status", "ev_rejected_messages", ["status"])
    op.create_table(
        "ev_quarantined_files",
        sa.Column("file_name", sa.Text(), nullable=False, primary_key=True, comment="File name in the landing folder."),
        sa.Column("file_sha256", sa.Text(), nullable=False, primary_key=True, comment="SHA-256 of the bytes."),
        sa.Column("batch_id", sa.Text(), nullable=False, comment="Micro-batch that read it."),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False, comment="Size in bytes."),
        sa.Column("error", sa.Text(), nullable=False, comment="Why it could not be parsed (the parser's error)."),
        sa.Column("content", sa.LargeBinary(), nullable=False, comment="The file's bytes, as received."),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False, comment="When it was quarantined."),
        comment="Landing files that could not be parsed at all, kept whole with the parser's error.",
    )
    op.create_table(
        "ref_substations",
        sa.Column("substation_id", sa.Text(), nullable=False, primary_key=True, comment="Substation identifier."),
        sa.Column("substation_name", sa.Text(), nullable=True, comment="Substation name."),
        sa.Column(
            "effective_from", sa.Date(), nullable=False, primary_key=True, comment="First day this row is in effect."
        ),
        sa.Column(
            "effective_to",
            sa.Date(),
            nullable=True,
            comment="Day this row stops being in effect (exclusive); null = still in effect.",
        ),
        comment="Distribution substations (GIS).",
    )
    op.create_table(
        "ref_feeders",
        sa.Column("feeder_id", sa.Text(), nullable=False, primary_key=True, comment="Feeder identifier."),
        sa.Column("substation_id", sa.Text(), nullable=False, comment="Substation the feeder leaves from."),
        sa.Column("voltage_kv", sa.Float(), nullable=True, comment="Nominal feeder voltage, kV."),
        sa.Column(
            "effective_from", sa.Date(), nullable=False, primary_key=True, comment="First day this row is in effect."
        ),
        sa.Column(
            "effective_to",
            sa.Date(),
            nullable=True,
            comment="Day this row stops being in effect (exclusive); null = still in effect.",
        ),
        comment="Distribution feeders and the substation each leaves from (GIS).",
    )
    op.create_table(
        "ref_transformers",
        sa.Column(
            "transformer_id",
            sa.Text(),
            nullable=False,
            primary_key=True,
            comment="Transformer identifier (the feed's TransformerID).",
        ),
        sa.Column("feeder_id", sa.Text(), nullable=False, comment="Feeder the transformer is on."),
        sa.Column("kva_rating", sa.Float(), nullable=True, comment="Nameplate rating, kVA."),
        sa.Column("phase", sa.Text(), nullable=True, comment="Phase the transformer is connected to."),
        sa.Column(
            "effective_from", sa.Date(), nullable=False, primary_key=True, comment="First day this row is in effect."
        ),
        sa.Column(
            "effective_to",
            sa.Date(),
            nullable=True,
            comment="Day this row stops being in effect (exclusive); null = still in effect.",
        ),
        comment="Distribution transformers, their rating and feeder (GIS).",
    )
    op.create_table(
        "ref_premises",
        sa.Column(
            "premise_id",
            sa.Text(),
            nullable=False,
            primary_key=True,
            comment="Premise identifier (the feed's PremiseID).",
        ),
        sa.Column("premise_type", sa.Text(), nullable=True, comment="residential, multifamily or commercial."),
        sa.Column("city", sa.Text(), nullable=True, comment="City."),
        sa.Column("latitude", sa.Float(), nullable=True, comment="Latitude, degrees."),
        sa.Column("longitude", sa.Float(), nullable=True, comment="Longitude, degrees."),
        sa.Column(
            "effective_from", sa.Date(), nullable=False, primary_key=True, comment="First day this row is in effect."
        ),
        sa.Column(
            "effective_to",
            sa.Date(),
            nullable=True,
            comment="Day this row stops being in effect (exclusive); null = still in effect.",
        ),
        comment="Premises (CIS).",
    )
    op.create_table(
        "ref_service_points",
        sa.Column(
            "service_point_id",
            sa.Text(),
            nullable=False,
            primary_key=True,
            comment="Service point identifier (the feed's ServicePointID).",
        ),
        sa.Column("premise_id", sa.Text(), nullable=False, comment="Premise served."),
        sa.Column(
            "transformer_id",
            sa.Text(),
            nullable=False,
            comment="Transformer feeding the service point while this row is in effect.",
        ),
        sa.Column(
            "effective_from", sa.Date(), nullable=False, primary_key=True, comment="First day this row is in effect."
        ),
        sa.Column(
            "effective_to",
            sa.Date(),
            nullable=True,
            comment="Day this row stops being in effect (exclusive); null = still in effect.",
        ),
        comment="Service points: the premise each serves and the transformer that feeds it, over time (CIS, GIS).",
    )
    op.create_index("ix_ref_service_points_service_point_id", "ref_service_points", ["service_point_id"])
    op.create_table(
        "ref_meters",
        sa.Column("meter_id", sa.Text(), nullable=False, comment="Meter identifier (the feed's MeterID)."),
        sa.Column(
            "meter_key", sa.BigInteger(), nullable=False, primary_key=True, comment="Surrogate key of this meter row."
        ),
        sa.Column("meter_number", sa.Text(), nullable=True, comment="Meter number (the feed's MeterNumber)."),
        sa.Column("esn", sa.Text(), nullable=True, comment="Electronic serial number (the feed's ESN)."),
        sa.Column("service_point_id", sa.Text(), nullable=False, comment="Service point the meter is installed at."),
        sa.Column("effective_from", sa.Date(), nullable=False, comment="First day this row is in effect."),
        sa.Column(
            "effective_to",
            sa.Date(),
            nullable=True,
            comment="Day this row stops being in effect (exclusive); null = still in effect.",
        ),
        comment="Meters and the service point each is installed at, over time (MDMS). meter_key is the surrogate key the event table stores.",
    )
    op.create_index("ix_ref_meters_meter_id", "ref_meters", ["meter_id"])


def downgrade() -> None:
    raise NotImplementedError("there is nothing below the initial schema: drop the database instead")
