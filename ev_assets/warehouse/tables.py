"""One declaration per warehouse table.

Each table's columns are declared once here, with type, nullability and a description. From that
single declaration come the SQLAlchemy `Table` (DDL and writes), the pandera schema (the
schema-conformance checks), the Dagster `TableSchema` (column schema metadata in the UI), the
polars schema (reads) and the data dictionary in docs/ (a test keeps it in step).
Three hand-kept copies of a schema drift; one does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl
import sqlalchemy as sa

from ev_assets.core.quality import QUALITY_FLAGS

UTC_DATETIME = pl.Datetime("us", "UTC")

_SQL_TYPES: dict[pl.DataType, sa.types.TypeEngine] = {
    pl.String(): sa.Text(),
    pl.Int64(): sa.BigInteger(),
    pl.Float64(): sa.Float(),
    pl.Boolean(): sa.Boolean(),
    pl.Date(): sa.Date(),
    UTC_DATETIME: sa.DateTime(timezone=True),
    pl.Binary(): sa.LargeBinary(),
}

# Text that sorts by code point: SQLite's default (binary) collation; PostgreSQL's "C".
_CODE_POINT_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

_TYPE_NAMES: dict[pl.DataType, str] = {
    pl.String(): "text",
    pl.Int64(): "bigint",
    pl.Float64(): "double",
    pl.Boolean(): "boolean",
    pl.Date(): "date",
    UTC_DATETIME: "timestamp (UTC)",
    pl.Binary(): "bytes",
}


@dataclass(frozen=True)
class Col:
    name: str
    dtype: pl.DataType
    description: str
    nullable: bool = True
    checks: tuple[pa.Check, ...] = ()

    @property
    def type_name(self) -> str:
        """The column's type in words (data dictionary, Dagster column schema)."""
        return _TYPE_NAMES[self.dtype]


@dataclass(frozen=True)
class PartialIndex:
    """An index over only the rows `where` (SQL both SQLite and PostgreSQL read) holds for: inserts
    of other rows never touch its pages. Named ix_<table>_<label>_<columns>."""

    label: str
    columns: tuple[str, ...]
    where: str


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    columns: tuple[Col, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    partial_indexes: tuple[PartialIndex, ...] = ()
    # Text columns whose ranges are read (Warehouse.read_id_ranges): they sort by code point in
    # every database (SQLite's default; COLLATE "C" in PostgreSQL, whatever the database's own).
    code_point_order: tuple[str, ...] = ()
    # PostgreSQL: the table is RANGE-partitioned by month of this date column (migration 0022;
    # ev_assets.warehouse.partitions makes the months ahead and detaches old ones). SQLite keeps a
    # plain table. The column must be a function of the primary key (an id holding its time, a day
    # of the key): the partitioned table's key adds it (postgres_primary_key) and stays as unique.
    partition_by_month: str | None = None
    # The id column whose value ends with the time (`...|<ISO 8601 UTC>`) whose local date is the
    # partition column's value: a read by id then names its one partition (Warehouse: PostgreSQL
    # skips the others), instead of seeking the id in every month's index.
    partition_date_in_id: str | None = None
    group: str = "warehouse"
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def index_names(self) -> set[str]:
        """The names of the table's indexes (other than its primary key's), as the database has them."""
        names = {f"ix_{self.name}_{'_'.join(cols)}" for cols in self.indexes}
        return names | {f"ix_{self.name}_{i.label}_{'_'.join(i.columns)}" for i in self.partial_indexes}

    @property
    def postgres_primary_key(self) -> tuple[str, ...]:
        """The primary key as PostgreSQL holds it: a partitioned table's unique keys must include its
        partition column, which is added last when the key lacks it. The column is a function of the
        declared key, so a key value is exactly as unique with it as without."""
        if self.partition_by_month is None or self.partition_by_month in self.primary_key:
            return self.primary_key
        return (*self.primary_key, self.partition_by_month)

    def leads_an_index(self, column: str) -> bool:
        """Whether an index (the primary key's or a declared one, not a partial one) starts with
        `column`: the database can seek to a value of it."""
        return any(cols[0] == column for cols in (self.primary_key, *self.indexes))

    def sqlalchemy_table(self, metadata: sa.MetaData) -> sa.Table:
        columns = [
            sa.Column(
                c.name,
                _CODE_POINT_TEXT if c.name in self.code_point_order else _SQL_TYPES[c.dtype],
                nullable=c.nullable and c.name not in self.primary_key,
                primary_key=c.name in self.primary_key,
                comment=c.description,
            )
            for c in self.columns
        ]
        indexes = [sa.Index(f"ix_{self.name}_{'_'.join(cols)}", *cols) for cols in self.indexes]
        indexes += [
            sa.Index(
                f"ix_{self.name}_{i.label}_{'_'.join(i.columns)}",
                *i.columns,
                sqlite_where=sa.text(i.where),
                postgresql_where=sa.text(i.where),
            )
            for i in self.partial_indexes
        ]
        return sa.Table(self.name, metadata, *columns, *indexes, comment=self.description)

    def pandera_schema(self) -> pa.DataFrameSchema:
        if "pandera" not in self._cache:
            self._cache["pandera"] = pa.DataFrameSchema(
                {c.name: pa.Column(c.dtype, checks=list(c.checks), nullable=c.nullable) for c in self.columns},
                name=self.name,
                strict=True,
                unique=list(self.primary_key),
            )
        return self._cache["pandera"]

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The frame with exactly this table's columns, in order and cast to the declared types."""
        missing = [c for c in self.column_names if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.name}: frame lacks columns {missing}")
        return frame.select([pl.col(c.name).cast(c.dtype) for c in self.columns])

    def markdown(self) -> str:
        lines = [
            f"### `{self.name}`",
            "",
            self.description,
            "",
            f"Primary key: {', '.join(f'`{c}`' for c in self.primary_key)}.",
            "",
            *(
                [
                    f"PostgreSQL: partitioned by month of `{self.partition_by_month}` (primary key there: "
                    f"{', '.join(f'`{c}`' for c in self.postgres_primary_key)}).",
                    "",
                ]
                if self.partition_by_month
                else []
            ),
            "| column | type | nullable | description |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{c.name}` | {c.type_name} | {'yes' if c.nullable else 'no'} | {c.description} |" for c in self.columns
        ]
        return "\n".join(lines)


def _positive(name: str) -> tuple[pa.Check, ...]:
    return (pa.Check.gt(0, error=f"{name} must be > 0"),)


def _non_negative(name: str) -> tuple[pa.Check, ...]:
    return (pa.Check.ge(0, error=f"{name} must be >= 0"),)


def _effective_dates() -> tuple[Col, ...]:
    return (
        Col("effective_from", pl.Date(), "First day this row is in effect.", nullable=False),
        Col("effective_to", pl.Date(), "Day this row stops being in effect (exclusive); null = still in effect."),
    )


# --- reference dimensions (loaded from the utility's CSV extracts) -------------------------------

REF_SUBSTATIONS = TableSpec(
    name="ref_substations",
    description="Distribution substations (GIS).",
    columns=(
        Col("substation_id", pl.String(), "Substation identifier.", nullable=False),
        Col("substation_name", pl.String(), "Substation name."),
        *_effective_dates(),
    ),
    primary_key=("substation_id", "effective_from"),
    group="reference",
)

REF_FEEDERS = TableSpec(
    name="ref_feeders",
    description="Distribution feeders and the substation each leaves from (GIS).",
    columns=(
        Col("feeder_id", pl.String(), "Feeder identifier.", nullable=False),
        Col("substation_id", pl.String(), "Substation the feeder leaves from.", nullable=False),
        Col("voltage_kv", pl.Float64(), "Nominal feeder voltage, kV."),
        *_effective_dates(),
    ),
    primary_key=("feeder_id", "effective_from"),
    group="reference",
)

REF_TRANSFORMERS = TableSpec(
    name="ref_transformers",
    description="Distribution transformers, their rating and feeder (GIS).",
    columns=(
        Col("transformer_id", pl.String(), "Transformer identifier (the feed's TransformerID).", nullable=False),
        Col("feeder_id", pl.String(), "Feeder the transformer is on.", nullable=False),
        Col("kva_rating", pl.Float64(), "Nameplate rating, kVA.", checks=_positive("kva_rating")),
        Col("phase", pl.String(), "Phase the transformer is connected to."),
        Col(
            "base_load_scale",
            pl.Float64(),
            (
                "This transformer's scale of the non-EV base load profile in its aging "
                "(transformer_daily_load.hot_spot_max_c...); null: EV_BASE_LOAD_SCALE."
            ),
            checks=_non_negative("base_load_scale"),
        ),
        Col("ambient_c", pl.Float64(), "This transformer's ambient temperature in its aging, °C; null: EV_AMBIENT_C."),
        *_effective_dates(),
    ),
    primary_key=("transformer_id", "effective_from"),
    group="reference",
)

REF_PREMISES = TableSpec(
    name="ref_premises",
    description="Premises (CIS).",
    columns=(
        Col("premise_id", pl.String(), "Premise identifier (the feed's PremiseID).", nullable=False),
        Col("premise_type", pl.String(), "residential, multifamily or commercial."),
        Col("city", pl.String(), "City."),
        Col("latitude", pl.Float64(), "Latitude, degrees."),
        Col("longitude", pl.Float64(), "Longitude, degrees."),
        *_effective_dates(),
    ),
    primary_key=("premise_id", "effective_from"),
    group="reference",
)

REF_SERVICE_POINTS = TableSpec(
    name="ref_service_points",
    description="Service points: the premise each serves and the transformer that feeds it, over time (CIS, GIS).",
    columns=(
        Col("service_point_id", pl.String(), "Service point identifier (the feed's ServicePointID).", nullable=False),
        Col("premise_id", pl.String(), "Premise served.", nullable=False),
        Col(
            "transformer_id",
            pl.String(),
            "Transformer feeding the service point while this row is in effect.",
            nullable=False,
        ),
        *_effective_dates(),
    ),
    primary_key=("service_point_id", "effective_from"),
    indexes=(("service_point_id",),),
    group="reference",
)

REF_METERS = TableSpec(
    name="ref_meters",
    description=(
        "Meters and the service point each is installed at, over time (MDMS). meter_key is the surrogate key the "
        "event table stores."
    ),
    columns=(
        Col("meter_id", pl.String(), "Meter identifier (the feed's MeterID).", nullable=False),
        Col("meter_key", pl.Int64(), "Surrogate key of this meter row.", nullable=False),
        Col("meter_number", pl.String(), "Meter number (the feed's MeterNumber)."),
        Col("esn", pl.String(), "Electronic serial number (the feed's ESN)."),
        Col("service_point_id", pl.String(), "Service point the meter is installed at.", nullable=False),
        *_effective_dates(),
    ),
    primary_key=("meter_key",),
    indexes=(("meter_id",),),
    group="reference",
)

REFERENCE_TABLES: dict[str, TableSpec] = {
    "substations": REF_SUBSTATIONS,
    "feeders": REF_FEEDERS,
    "transformers": REF_TRANSFORMERS,
    "premises": REF_PREMISES,
    "service_points": REF_SERVICE_POINTS,
    "meters": REF_METERS,
}

# --- the event table, sessions, planning aggregates ---------------------------------------------

_ATTRIBUTION = (
    Col(
        "meter_key",
        pl.Int64(),
        (
            "Surrogate key of the meter row in effect on the event date (ref_meters); null when the meter is not "
            "(yet) in the reference data."
        ),
    ),
    Col(
        "service_point_id",
        pl.String(),
        "Service point as of the event date: from the reference data when the meter is known, else as reported.",
    ),
    Col(
        "premise_id", pl.String(), "Premise as of the event date: from the reference data when known, else as reported."
    ),
    Col(
        "transformer_id",
        pl.String(),
        "Transformer as of the event date: from the reference data (GIS) when known, else as reported.",
    ),
    Col("feeder_id", pl.String(), "Feeder of the transformer as of the event date; null when not enriched."),
    Col("substation_id", pl.String(), "Substation of the feeder as of the event date; null when not enriched."),
    Col(
        "enrichment_status",
        pl.String(),
        "enriched, or meter_unknown (accepted, waiting for the reference data to catch up).",
        nullable=False,
    ),
)

EV_CHARGING_EVENTS = TableSpec(
    name="ev_charging_events",
    description=(
        "Every accepted agent message, once: the start and end messages of charging sessions, "
        "typed, in UTC, deduplicated on (meter_id, message_type, message_time) and enriched with "
        "the reference data as of the message date."
    ),
    columns=(
        Col(
            "message_id",
            pl.String(),
            (
                "Deterministic id of the message, readable and the same on every channel and replay: "
                "meter_id|message_type|message_time (UTC, ISO 8601 with six fractional digits, truncated to the "
                "millisecond), e.g. `M1|start|2024-06-03T18:00:00.000000Z`."
            ),
            nullable=False,
        ),
        Col("message_type", pl.String(), "start or end.", nullable=False, checks=(pa.Check.isin(["start", "end"]),)),
        Col("meter_id", pl.String(), "MeterID as reported.", nullable=False),
        Col("meter_number", pl.String(), "MeterNumber as reported."),
        Col("esn", pl.String(), "ESN as reported."),
        *_ATTRIBUTION,
        Col("reported_service_point_id", pl.String(), "ServicePointID as the agent reported it."),
        Col("reported_premise_id", pl.String(), "PremiseID as the agent reported it."),
        Col("reported_transformer_id", pl.String(), "TransformerID as the agent reported it."),
        Col(
            "message_time",
            UTC_DATETIME,
            "The time the message reports: ChargeStartTime of a start, ChargeEndTime of an end.",
            nullable=False,
        ),
        Col("message_date", pl.Date(), "Local date (EV_TIMEZONE) of message_time.", nullable=False),
        Col("received_time", UTC_DATETIME, "ReceivedTime: when the platform received the message.", nullable=False),
        Col("charge_start_time", UTC_DATETIME, "ChargeStartTime (start messages)."),
        Col("charge_end_time", UTC_DATETIME, "ChargeEndTime (end messages)."),
        Col("charge_w", pl.Float64(), "ChargeW, watts (start messages).", checks=_positive("charge_w")),
        Col(
            "charge_duration",
            pl.Float64(),
            "ChargeDuration as reported, in the feed's unit (end messages).",
            checks=_positive("charge_duration"),
        ),
        Col(
            "charge_energy_wh",
            pl.Float64(),
            "ChargeEnergy, watt-hours (end messages).",
            checks=_positive("charge_energy_wh"),
        ),
        Col("extra_fields", pl.String(), "Fields the spec does not define, as JSON; null when none."),
        Col("batch_id", pl.String(), "Micro-batch that accepted the message.", nullable=False),
        Col("file_name", pl.String(), "Landing file the message came in.", nullable=False),
        Col(
            "first_channel",
            pl.String(),
            "Channel the message first arrived by, from its landing file's name: stream (the receiver's `stream-*` "
            "files), export (a batch export's `export-*` files) or folder (any other file). A later delivery by "
            "another channel is a duplicate and does not change it. Events stored before this column: folder.",
            nullable=False,
            checks=(pa.Check.isin(["stream", "export", "folder"]),),
        ),
        Col("record_index", pl.Int64(), "Position of the record in its file (0-based).", nullable=False),
        Col("ingested_at", UTC_DATETIME, "When the pipeline accepted the message.", nullable=False),
    ),
    primary_key=("message_id",),
    # A meter's events by type and time: ranges of the primary key (`meter|type|time`), not an
    # index of (meter_id, message_time), which cost every batch a page per meter on a large history.
    code_point_order=("message_id",),
    # received_time: the export gap check counts a received day's events by first_channel.
    indexes=(("batch_id",), ("message_date",), ("received_time",)),
    partition_by_month="message_date",
    partition_date_in_id="message_id",
)

EV_CHARGING_SESSIONS = TableSpec(
    name="ev_charging_sessions",
    description=(
        "Charging sessions paired from start and end messages per meter. Event time is the "
        "session start (spec). status: complete (start and end, however long apart; a pair longer "
        "than EV_MAX_SESSION_H only when its energy fits ChargeW x duration x "
        "EV_CHARGE_W_TOLERANCE), start_only (no end yet, started at most EV_MAX_SESSION_H ago: "
        "still charging), timed_out (no end for longer than EV_MAX_SESSION_H: late or lost; "
        "becomes complete when its end arrives), end_only (its start never came). Only complete "
        "sessions count in the load."
    ),
    columns=(
        Col(
            "session_id",
            pl.String(),
            (
                "Deterministic id, readable and the same on every replay: meter_id|start_time (UTC, ISO 8601 "
                "with six fractional digits), or meter_id|end|end_time for end_only, e.g. "
                "`M1|2024-06-03T18:00:00.000000Z`."
            ),
            nullable=False,
        ),
        Col("meter_id", pl.String(), "MeterID.", nullable=False),
        *_ATTRIBUTION,
        Col(
            "status",
            pl.String(),
            "complete, start_only, timed_out or end_only (see the table's description).",
            nullable=False,
            checks=(pa.Check.isin(["complete", "start_only", "timed_out", "end_only"]),),
        ),
        Col(
            "event_date",
            pl.Date(),
            "Local date (EV_TIMEZONE) of the session start (of the end for end_only).",
            nullable=False,
        ),
        Col("start_time", UTC_DATETIME, "ChargeStartTime of the start message."),
        Col("end_time", UTC_DATETIME, "ChargeEndTime of the end message."),
        Col(
            "duration_h",
            pl.Float64(),
            "end_time - start_time, hours (derived from the timestamps, not the reported duration).",
            checks=_positive("duration_h"),
        ),
        Col("charge_w", pl.Float64(), "ChargeW of the start message, watts.", checks=_positive("charge_w")),
        Col("energy_wh", pl.Float64(), "ChargeEnergy of the end message, watt-hours.", checks=_positive("energy_wh")),
        Col(
            "average_kw",
            pl.Float64(),
            "energy_wh / duration_h / 1000: the load used for planning aggregates.",
            checks=_positive("average_kw"),
        ),
        Col("reported_duration", pl.Float64(), "ChargeDuration of the end message, in the feed's unit."),
        Col("start_message_id", pl.String(), "message_id of the start message."),
        Col("end_message_id", pl.String(), "message_id of the end message."),
        Col(
            "quality_flags",
            pl.String(),
            "Comma-separated codes of the failed plausibility checks of a complete session; null when trusted. "
            + " ".join(f"`{code}`: {text}" for code, text in QUALITY_FLAGS.items())
            + " A flagged session counts in the daily load's flagged_energy_kwh, not in peak_kw or energy_kwh.",
        ),
        Col(
            "quality_reasons",
            pl.String(),
            "JSON list of sentences, one per flag, with the figures that failed; null when trusted.",
        ),
        Col(
            "updated_at",
            UTC_DATETIME,
            (
                "When the session last changed: a re-pairing that finds a stored session the same (this column "
                "aside) leaves it as it is."
            ),
            nullable=False,
        ),
    ),
    primary_key=("session_id",),
    code_point_order=("session_id",),
    # A meter's sessions by start time: ranges of the primary key (`meter|start time`), not an
    # index of (meter_id, start_time), which cost every batch a page per meter on a large history.
    # (status, start_time): open starts turning timed_out.
    indexes=(
        ("event_date",),
        ("transformer_id", "event_date"),
        ("status", "start_time"),
    ),
    # The window's end_only sessions (no start) by their end. Partial: a batch's new sessions
    # almost all have a start, and an index of every session by (meter_id, end_time) cost a page
    # per meter of the batch on a large history (BENCHMARKS.md: 14 % of the pages a batch dirtied).
    partial_indexes=(PartialIndex("end_only", ("meter_id", "end_time"), "start_time IS NULL"),),
    partition_by_month="event_date",
    partition_date_in_id="session_id",
)


def _daily_load_spec(level: str, key: str, extra: tuple[Col, ...], grain: str) -> TableSpec:
    return TableSpec(
        name=f"{level}_daily_load",
        description=(
            f"EV charging load per {grain} and local day (EV_TIMEZONE), for planning models. "
            "Loads are counted in the 15-minute intervals they occur in (a session past midnight "
            "loads the next day); sessions are counted on their event date (start). Complete "
            "sessions only; sessions with quality flags are kept apart (flagged_energy_kwh, "
            "flagged_session_count) and never count in peak_kw, energy_kwh or ev_count."
        ),
        columns=(
            Col(key, pl.String(), f"{grain.capitalize()} identifier.", nullable=False),
            Col("load_date", pl.Date(), "Local date (EV_TIMEZONE): the daily partition.", nullable=False),
            *extra,
            Col(
                "session_count",
                pl.Int64(),
                "Trusted sessions (no quality flags) that started on this day.",
                nullable=False,
                checks=_non_negative("session_count"),
            ),
            Col(
                "ev_count",
                pl.Int64(),
                "Distinct meters (EVs) with trusted load on this day.",
                nullable=False,
                checks=_non_negative("ev_count"),
            ),
            Col(
                "energy_kwh",
                pl.Float64(),
                "EV energy of trusted sessions delivered during this day, kWh.",
                nullable=False,
                checks=_non_negative("energy_kwh"),
            ),
            Col(
                "peak_kw",
                pl.Float64(),
                (
                    "Coincident peak of trusted sessions: the largest 15-minute average of their summed load, kW "
                    "(0 when the day has flagged load only)."
                ),
                nullable=False,
                checks=_non_negative("peak_kw"),
            ),
            Col(
                "peak_interval_start",
                UTC_DATETIME,
                "Start of the 15-minute interval of the peak; null when the day has flagged load only.",
            ),
            Col(
                "flagged_energy_kwh",
                pl.Float64(),
                "EV energy of sessions with quality flags delivered during this day, kWh: doubtful load, kept apart.",
                nullable=False,
                checks=_non_negative("flagged_energy_kwh"),
            ),
            Col(
                "flagged_session_count",
                pl.Int64(),
                "Sessions with quality flags that started on this day.",
                nullable=False,
                checks=_non_negative("flagged_session_count"),
            ),
            Col("average_kw", pl.Float64(), "energy_kwh / 24 h.", nullable=False),
            Col("load_factor", pl.Float64(), "average_kw / peak_kw; null when peak_kw is 0."),
            Col("diversity_factor", pl.Float64(), "Sum of each EV's own 15-minute peak / coincident peak (>= 1)."),
            Col("updated_at", UTC_DATETIME, "When this row was computed.", nullable=False),
        ),
        primary_key=(key, "load_date"),
        indexes=(("load_date",),),
        partition_by_month="load_date",
        group="planning",
    )


TRANSFORMER_DAILY_LOAD = _daily_load_spec(
    "transformer",
    "transformer_id",
    (
        Col("feeder_id", pl.String(), "Feeder of the transformer on this day; null when not in the reference data."),
        Col("substation_id", pl.String(), "Substation of the feeder on this day."),
        Col("kva_rating", pl.Float64(), "Nameplate rating, kVA; null when not in the reference data."),
        Col("peak_kva", pl.Float64(), "peak_kw / the configured power factor (EV_POWER_FACTOR, default 0.9)."),
        Col("utilization", pl.Float64(), "peak_kva / kva_rating: EV load alone as a share of the rating."),
        # Overload exposure (issue 12 item 2), from the day's 15-minute profile
        # (transformer_interval_load): same grain, same step and transaction as the peak, so a
        # planner reads peak and exposure in one row and they never disagree.
        Col(
            "minutes_above_rating",
            pl.Int64(),
            (
                "Minutes of the day (15 per interval) whose EV kVA exceeds kva_rating (kW above kva_rating x "
                "EV_POWER_FACTOR); null when the rating is unknown."
            ),
            checks=_non_negative("minutes_above_rating"),
        ),
        Col(
            "kwh_above_rating",
            pl.Float64(),
            (
                "EV energy in excess of the rating: sum over the intervals above it of (kW - kva_rating x "
                "EV_POWER_FACTOR) x 0.25 h; null when the rating is unknown."
            ),
            checks=_non_negative("kwh_above_rating"),
        ),
        Col(
            "planning_threshold",
            pl.Float64(),
            (
                "The planning threshold used, as a share of the rating (EV_PLANNING_THRESHOLD, default 1.0 = 100 "
                "%); null when the rating is unknown."
            ),
        ),
        Col(
            "minutes_above_threshold",
            pl.Int64(),
            (
                "Minutes of the day whose EV kW exceeds kva_rating x EV_POWER_FACTOR x planning_threshold; null "
                "when the rating is unknown."
            ),
            checks=_non_negative("minutes_above_threshold"),
        ),
        Col(
            "kwh_above_threshold",
            pl.Float64(),
            (
                "EV energy in excess of the planning threshold, kWh (as kwh_above_rating); null when the rating "
                "is unknown."
            ),
            checks=_non_negative("kwh_above_threshold"),
        ),
        Col(
            "longest_above_threshold_minutes",
            pl.Int64(),
            (
                "Longest continuous stretch of consecutive 15-minute intervals above the planning threshold on "
                "this day, minutes; null when the rating is unknown."
            ),
            checks=_non_negative("longest_above_threshold_minutes"),
        ),
        # Transformer aging (issue 12 item 3, IEEE C57.91; ev_assets.core.transformer_aging): from the
        # same 15-minute profile plus the non-EV base load, in the same step and transaction.
        Col(
            "hot_spot_max_c",
            pl.Float64(),
            (
                "Highest winding hot-spot temperature of the day, °C (IEEE C57.91 clause 7, exponential method): "
                "the 15-minute load in per-unit of kva_rating, EV kVA plus the base load EV_BASE_LOAD_PU_PROFILE "
                "x EV_BASE_LOAD_SCALE, at ambient EV_AMBIENT_C; null when the rating is unknown."
            ),
        ),
        Col(
            "aging_factor_max",
            pl.Float64(),
            (
                "Largest aging acceleration factor F_AA of the day's intervals (C57.91 clause 5, eq. 2: 1 at a "
                "110 °C hot spot); null when the rating is unknown."
            ),
            checks=_non_negative("aging_factor_max"),
        ),
        Col(
            "equivalent_aging",
            pl.Float64(),
            (
                "Equivalent aging factor F_EQA of the day (C57.91 clause 5, eq. 3: the time-weighted mean of "
                "F_AA); null when the rating is unknown."
            ),
            checks=_non_negative("equivalent_aging"),
        ),
        Col(
            "loss_of_life_h",
            pl.Float64(),
            (
                "Insulation life used on the day, hours at the 110 °C reference rate: equivalent_aging x the "
                "day's length in hours (24; 23 or 25 on DST change days); null when the rating is unknown."
            ),
            checks=_non_negative("loss_of_life_h"),
        ),
        Col(
            "top_oil_rise_end_k",
            pl.Float64(),
            (
                "Top-oil rise over ambient at the end of the day, K (C57.91 clause 7): the next day's start (heat "
                "carries over midnight); null when the rating is unknown."
            ),
        ),
        Col(
            "hot_spot_rise_end_k",
            pl.Float64(),
            (
                "Hot-spot rise over top oil at the end of the day, K: the next day's start; null when the rating "
                "is unknown."
            ),
        ),
    ),
    "distribution transformer",
)
FEEDER_DAILY_LOAD = _daily_load_spec(
    "feeder",
    "feeder_id",
    (Col("substation_id", pl.String(), "Substation of the feeder on this day."),),
    "feeder",
)
SUBSTATION_DAILY_LOAD = _daily_load_spec("substation", "substation_id", (), "substation")


def _interval_load_spec(level: str, key: str, grain: str) -> TableSpec:
    return TableSpec(
        name=f"{level}_interval_load",
        description=(
            f"15-minute EV load profile per {grain}: one row per {grain} and 15-minute interval with "
            "trusted EV load (intervals without load have no row). Computed in the same step and "
            f"transaction as {level}_daily_load, from the same sums: the day's largest kw is its peak_kw. "
            "Partitioned by load_date like the daily load."
        ),
        columns=(
            Col(key, pl.String(), f"{grain.capitalize()} identifier.", nullable=False),
            Col("interval_start", UTC_DATETIME, "Start of the 15-minute interval (UTC).", nullable=False),
            Col(
                "load_date",
                pl.Date(),
                "Local date (EV_TIMEZONE) of interval_start: the daily partition.",
                nullable=False,
            ),
            Col(
                "kw",
                pl.Float64(),
                "Average EV power of trusted sessions in the interval, kW (partial intervals weighted by overlap).",
                nullable=False,
                checks=_positive("kw"),
            ),
            Col("kva", pl.Float64(), "kw / EV_POWER_FACTOR.", nullable=False, checks=_positive("kva")),
            Col(
                "ev_count",
                pl.Int64(),
                "Distinct meters (EVs) charging in the interval.",
                nullable=False,
                checks=_positive("ev_count"),
            ),
            Col("updated_at", UTC_DATETIME, "When this row was computed.", nullable=False),
        ),
        primary_key=(key, "interval_start"),
        indexes=(("load_date",),),
        partition_by_month="load_date",
        group="planning",
    )


TRANSFORMER_INTERVAL_LOAD = _interval_load_spec("transformer", "transformer_id", "distribution transformer")
FEEDER_INTERVAL_LOAD = _interval_load_spec("feeder", "feeder_id", "feeder")
SUBSTATION_INTERVAL_LOAD = _interval_load_spec("substation", "substation_id", "substation")

CHARGER_LEVELS = ("level_1", "level_2", "dc")

PREMISE_EV_PROFILE = TableSpec(
    name="premise_ev_profile",
    description=(
        "EV adoption by premise, a snapshot refreshed daily: one row per premise with trusted complete "
        "charging sessions (no quality flags), over its whole history. What an EV program uses to target customers."
    ),
    columns=(
        Col("premise_id", pl.String(), "Premise identifier.", nullable=False),
        Col("transformer_id", pl.String(), "Transformer of the premise's latest session."),
        Col("feeder_id", pl.String(), "Feeder of the premise's latest session."),
        Col(
            "meter_count",
            pl.Int64(),
            "Distinct meters that charged at the premise.",
            nullable=False,
            checks=_positive("meter_count"),
        ),
        Col("first_charging_day", pl.Date(), "Local event date of the first session.", nullable=False),
        Col("last_charging_day", pl.Date(), "Local event date of the latest session.", nullable=False),
        Col(
            "active_weeks",
            pl.Float64(),
            (
                "Active span in weeks: (last_charging_day - first_charging_day + 1 day) / 7, at least 1 (a "
                "premise seen on one day is not extrapolated to 7 sessions a week)."
            ),
            nullable=False,
            checks=_positive("active_weeks"),
        ),
        Col("session_count", pl.Int64(), "Sessions.", nullable=False, checks=_positive("session_count")),
        Col(
            "sessions_per_week",
            pl.Float64(),
            "session_count / active_weeks.",
            nullable=False,
            checks=_positive("sessions_per_week"),
        ),
        Col(
            "energy_kwh",
            pl.Float64(),
            "Energy of the sessions, kWh.",
            nullable=False,
            checks=_non_negative("energy_kwh"),
        ),
        Col("median_charge_w", pl.Float64(), "Median ChargeW of the sessions, W."),
        Col(
            "charger_level",
            pl.String(),
            (
                "Inferred from median_charge_w: level_1 (< 2.0 kW), level_2 (2.0 to 19.2 kW), dc (above 19.2 "
                "kW); null without ChargeW."
            ),
            checks=(pa.Check.isin(list(CHARGER_LEVELS)),),
        ),
        Col(
            "typical_start_hour",
            pl.Int64(),
            "Most frequent local start hour (0-23; ties: the earliest).",
            nullable=False,
            checks=(pa.Check.in_range(0, 23),),
        ),
        Col(
            "on_peak_energy_share",
            pl.Float64(),
            (
                "Share of energy_kwh delivered in the on-peak windows (EV_TOU_ON_PEAK, default weekdays "
                "16:00-21:00 local), from the 15-minute load shape (EV_LOAD_SHAPE); null when energy_kwh is 0."
            ),
            checks=(pa.Check.in_range(0, 1),),
        ),
        Col("updated_at", UTC_DATETIME, "When the snapshot was computed.", nullable=False),
    ),
    primary_key=("premise_id",),
    indexes=(("first_charging_day",), ("transformer_id",)),
    group="planning",
)

TRANSFORMER_PLANNING_QUEUE = TableSpec(
    name="transformer_planning_queue",
    description=(
        "Transformers ranked for planning by a risk score over a rolling window of EV_PLANNING_WINDOW_DAYS local "
        "days (default 90) ending on window_last_day, the latest load_date of transformer_daily_load: a snapshot "
        "refreshed daily. risk_score = EV_RISK_WEIGHT_UTILIZATION x peak_utilization + "
        "EV_RISK_WEIGHT_HOURS_OVER_RATING "
        "x hours_over_rating / window days + EV_RISK_WEIGHT_LOSS_OF_LIFE x loss_of_life_h / (24 x window days) + "
        "EV_RISK_WEIGHT_EV_GROWTH x ev_count_growth + EV_RISK_WEIGHT_OVERLOAD_SOON / years_to_likely_overload "
        "(a null term counts 0). One row per transformer with a daily row in the window."
    ),
    columns=(
        Col("transformer_id", pl.String(), "Transformer identifier.", nullable=False),
        Col(
            "rank",
            pl.Int64(),
            "1 = the highest risk_score; ties: the smaller transformer_id.",
            nullable=False,
            checks=_positive("rank"),
        ),
        Col("risk_score", pl.Float64(), "The weighted score above.", nullable=False),
        Col("feeder_id", pl.String(), "Feeder of the transformer on its latest day in the window."),
        Col("kva_rating", pl.Float64(), "Rating on its latest rated day in the window, kVA; null when unknown."),
        Col("window_first_day", pl.Date(), "First local day of the window.", nullable=False),
        Col("window_last_day", pl.Date(), "Last local day of the window (inclusive).", nullable=False),
        Col(
            "days_with_load",
            pl.Int64(),
            "Days of the window with a transformer_daily_load row (EV load).",
            nullable=False,
            checks=_positive("days_with_load"),
        ),
        Col(
            "peak_utilization",
            pl.Float64(),
            "Largest daily utilization (peak EV kVA / kva_rating) in the window; null when the rating is unknown.",
        ),
        Col(
            "hours_over_rating",
            pl.Float64(),
            "Sum of minutes_above_rating / 60 over the window; null when the rating is unknown.",
            checks=_non_negative("hours_over_rating"),
        ),
        Col(
            "loss_of_life_h",
            pl.Float64(),
            (
                "Sum of the daily loss_of_life_h (IEEE C57.91 aging) over the window, hours; null when the "
                "rating is unknown."
            ),
            checks=_non_negative("loss_of_life_h"),
        ),
        Col(
            "ev_count_first_half",
            pl.Int64(),
            (
                "Largest daily ev_count in the earlier part of the window (all but its last "
                "EV_PLANNING_WINDOW_DAYS // 2 days); 0 without load there."
            ),
            nullable=False,
        ),
        Col(
            "ev_count_second_half",
            pl.Int64(),
            "Largest daily ev_count in the last EV_PLANNING_WINDOW_DAYS // 2 days of the window; 0 without load there.",
            nullable=False,
        ),
        Col(
            "ev_count_growth",
            pl.Int64(),
            "ev_count_second_half - ev_count_first_half (negative when EVs left).",
            nullable=False,
        ),
        Col(
            "years_to_likely_overload",
            pl.Int64(),
            (
                "transformer_overload_forecast (base scenario): first_year_p50 minus the year of window_last_day, "
                "at least 1; null when the forecast sees no likely overload in its horizon or has not run."
            ),
            checks=_positive("years_to_likely_overload"),
        ),
        Col("updated_at", UTC_DATETIME, "When the snapshot was computed.", nullable=False),
    ),
    primary_key=("transformer_id",),
    indexes=(("rank",),),
    group="planning",
)

NEW_EVS = TableSpec(
    name="new_evs",
    description=(
        "Premises first seen charging in the last EV_NEW_EV_DAYS days (default 30) before as_of_date, the "
        "latest local day with a trusted session (today in live operation; the data's last day for an "
        "imported history). Refreshed with premise_ev_profile, in the same transaction."
    ),
    columns=(
        Col("premise_id", pl.String(), "Premise identifier.", nullable=False),
        Col("first_charging_day", pl.Date(), "Local event date of the premise's first session.", nullable=False),
        Col("transformer_id", pl.String(), "Transformer of the premise's latest session."),
        Col("feeder_id", pl.String(), "Feeder of the premise's latest session."),
        Col("charger_level", pl.String(), "level_1, level_2 or dc (premise_ev_profile.charger_level)."),
        Col("session_count", pl.Int64(), "Sessions so far.", nullable=False),
        Col(
            "as_of_date",
            pl.Date(),
            "The day the window ends on (inclusive): first_charging_day > as_of_date - EV_NEW_EV_DAYS.",
            nullable=False,
        ),
        Col("updated_at", UTC_DATETIME, "When the snapshot was computed.", nullable=False),
    ),
    primary_key=("premise_id",),
    group="planning",
)

# --- the ledgers and the quarantine ---------------------------------------------------------------

EV_CHARGING_BEHAVIOR = TableSpec(
    name="ev_charging_behavior",
    description=(
        "How this utility's EVs charge, learned from the trusted complete sessions (no quality flags) of the whole "
        "history: a snapshot, one row per charger level (of the EV's median ChargeW), day type (weekday / weekend, "
        "local start date), meteorological season and local plug-in hour with sessions. Sessions per EV-day count "
        "every day from an EV's first session to history_end, charging or not. What the overload forecast draws from."
    ),
    columns=(
        Col("charger_level", pl.String(), "level_1, level_2 or dc (the EV's median ChargeW).", nullable=False),
        Col("day_type", pl.String(), "weekday or weekend (local start date).", nullable=False),
        Col(
            "season",
            pl.String(),
            "winter (Dec-Feb), spring (Mar-May), summer (Jun-Aug), fall (Sep-Nov).",
            nullable=False,
        ),
        Col("plug_in_hour", pl.Int64(), "Local hour the sessions started (0-23).", nullable=False),
        Col("session_count", pl.Int64(), "Sessions that started in this hour (the sample size).", nullable=False),
        Col("plug_in_share", pl.Float64(), "session_count / group_session_count: the plug-in time distribution."),
        Col("energy_kwh_mean", pl.Float64(), "Mean energy of these sessions, kWh."),
        Col("energy_kwh_p10", pl.Float64(), "10th percentile of their energy, kWh."),
        Col("energy_kwh_p50", pl.Float64(), "Median energy, kWh."),
        Col("energy_kwh_p90", pl.Float64(), "90th percentile of their energy, kWh."),
        Col("power_kw_p10", pl.Float64(), "10th percentile of their ChargeW, kW."),
        Col("power_kw_p50", pl.Float64(), "Median ChargeW, kW."),
        Col("power_kw_p90", pl.Float64(), "90th percentile of their ChargeW, kW."),
        Col(
            "charging_minutes_mean",
            pl.Float64(),
            "Mean minutes of load (EV_LOAD_SHAPE: ChargeW until the energy is in).",
        ),
        Col("group_session_count", pl.Int64(), "Sessions of the level, day type and season (all hours)."),
        Col("ev_days", pl.Int64(), "EV-days of the level, day type and season: days EVs of the level were present."),
        Col("sessions_per_ev_day", pl.Float64(), "group_session_count / ev_days; null without EV-days."),
        Col("history_end", pl.Date(), "Last local day of the history learned from."),
        Col("updated_at", UTC_DATETIME, "When the snapshot was computed.", nullable=False),
    ),
    primary_key=("charger_level", "day_type", "season", "plug_in_hour"),
    group="planning",
)

TRANSFORMER_OVERLOAD_FORECAST = TableSpec(
    name="transformer_overload_forecast",
    description=(
        "When each transformer overloads as EVs keep arriving: per transformer, adoption scenario "
        "(EV_FORECAST_ADOPTION_SCENARIOS) and calendar year after as_of_date (EV_FORECAST_YEARS), a seeded Monte "
        "Carlo (EV_FORECAST_DRAWS) of the year's coincident 15-minute peak: EVs placed on premises by the feeder's "
        "adoption curve, their charging drawn from observed EVs (ev_charging_behavior), plus the base load of the "
        "aging model (EV_BASE_LOAD_PU_PROFILE x scale x rating; EV kVA = kW / EV_POWER_FACTOR). *_managed: the "
        "same with EV_FORECAST_MANAGED_SHARE of sessions moved into EV_FORECAST_MANAGED_WINDOW. A snapshot; "
        "docs/planning.md explains the method and what it cannot know."
    ),
    columns=(
        Col("transformer_id", pl.String(), "Transformer identifier.", nullable=False),
        Col("scenario", pl.String(), "Adoption scenario (low, base, high by default).", nullable=False),
        Col("year", pl.Int64(), "Calendar year forecast.", nullable=False),
        Col("feeder_id", pl.String(), "Feeder of the transformer (its adoption curve)."),
        Col("kva_rating", pl.Float64(), "Rating, kVA; null: unrated (no overload figures)."),
        Col("premises", pl.Int64(), "Premises the transformer serves as of as_of_date.", nullable=False),
        Col("evs_now", pl.Int64(), "Premises with an EV seen charging by as_of_date.", nullable=False),
        Col("expected_evs", pl.Float64(), "Expected EVs at the end of the year.", nullable=False),
        Col("ev_peak_kw_p50", pl.Float64(), "Median (P50) of the year's 15-minute EV peak, kW (EV load only)."),
        Col("ev_peak_kw_p90", pl.Float64(), "P90 of the year's 15-minute EV peak, kW."),
        Col("peak_kva_p50", pl.Float64(), "P50 of the year's 15-minute peak of EV + base load, kVA."),
        Col("peak_kva_p90", pl.Float64(), "P90 of the year's 15-minute peak of EV + base load, kVA."),
        Col("p_exceed_rating", pl.Float64(), "Probability that the year's peak kVA exceeds kva_rating."),
        Col(
            "p_exceed_threshold",
            pl.Float64(),
            "Probability that the year's peak kVA exceeds EV_PLANNING_THRESHOLD x kva_rating.",
        ),
        Col("ev_peak_kw_p50_managed", pl.Float64(), "ev_peak_kw_p50 under managed charging."),
        Col("ev_peak_kw_p90_managed", pl.Float64(), "ev_peak_kw_p90 under managed charging."),
        Col("peak_kva_p50_managed", pl.Float64(), "peak_kva_p50 under managed charging."),
        Col("peak_kva_p90_managed", pl.Float64(), "peak_kva_p90 under managed charging."),
        Col("p_exceed_rating_managed", pl.Float64(), "p_exceed_rating under managed charging."),
        Col("p_exceed_threshold_managed", pl.Float64(), "p_exceed_threshold under managed charging."),
        Col(
            "first_year_p10",
            pl.Int64(),
            "First year (this scenario) with p_exceed_threshold >= 0.1; null: none in the horizon.",
        ),
        Col("first_year_p50", pl.Int64(), "First year with p_exceed_threshold >= 0.5; null: none in the horizon."),
        Col("first_year_p50_managed", pl.Int64(), "First year with p_exceed_threshold_managed >= 0.5; null: none."),
        Col(
            "years_deferred",
            pl.Int64(),
            (
                "first_year_p50_managed - first_year_p50: the years of upgrade managed charging defers (a managed "
                "transformer that never reaches 0.5 in the horizon counts as the year after it: at least this)."
            ),
        ),
        Col("as_of_date", pl.Date(), "Last local day of the history the forecast was fitted on.", nullable=False),
        Col("updated_at", UTC_DATETIME, "When the snapshot was computed.", nullable=False),
    ),
    primary_key=("transformer_id", "scenario", "year"),
    indexes=(("scenario", "first_year_p50"),),
    group="planning",
)

EV_FEED_FILES = TableSpec(
    name="ev_feed_files",
    description=(
        "Every landing file the pipeline has read, once per content (name and SHA-256): the file ledger that "
        "makes replays no-ops."
    ),
    columns=(
        Col("file_name", pl.String(), "File name in the landing folder.", nullable=False),
        Col("file_sha256", pl.String(), "SHA-256 of the file's bytes.", nullable=False),
        Col("batch_id", pl.String(), "Micro-batch that read it.", nullable=False),
        Col("size_bytes", pl.Int64(), "Size in bytes.", nullable=False),
        Col(
            "status",
            pl.String(),
            "parsed, repaired (valid once trailing commas were removed) or quarantined.",
            nullable=False,
        ),
        Col("records", pl.Int64(), "Records read from the file (0 when quarantined).", nullable=False),
        Col("read_at", UTC_DATETIME, "When it was read.", nullable=False),
    ),
    primary_key=("file_name", "file_sha256"),
    # The ingest step looks files up by content: without this index that lookup reads the whole
    # ledger, a cost that grows with history.
    indexes=(("batch_id",), ("file_sha256",)),
    group="ingest",
)

EV_INGEST_BATCHES = TableSpec(
    name="ev_ingest_batches",
    description=(
        "The batch ledger: one row per micro-batch with the counts that prove nothing is lost: "
        "records_read = accepted + duplicates + rejected, files_read = files_parsed + files_quarantined."
    ),
    columns=(
        Col("batch_id", pl.String(), "Micro-batch id (the sensor's run key).", nullable=False),
        Col("run_id", pl.String(), "Dagster run that processed it."),
        Col("files_read", pl.Int64(), "Files read.", nullable=False),
        Col("files_parsed", pl.Int64(), "Files parsed (strict JSON or repaired).", nullable=False),
        Col(
            "files_repaired",
            pl.Int64(),
            "Of the parsed files, those that needed trailing commas removed.",
            nullable=False,
        ),
        Col(
            "files_quarantined",
            pl.Int64(),
            "Files that could not be parsed, kept whole in ev_quarantined_files.",
            nullable=False,
        ),
        Col(
            "files_already_read",
            pl.Int64(),
            "Files skipped because the file ledger already holds the same content.",
            nullable=False,
        ),
        Col("records_read", pl.Int64(), "Records read from the parsed files.", nullable=False),
        Col("accepted", pl.Int64(), "Records accepted into ev_charging_events.", nullable=False),
        Col("duplicates", pl.Int64(), "Records identical in meaning to one already accepted.", nullable=False),
        Col("rejected", pl.Int64(), "Records quarantined in ev_rejected_messages.", nullable=False),
        Col("reconciled", pl.Boolean(), "Whether both identities hold.", nullable=False),
        Col("processed_at", UTC_DATETIME, "When the batch was processed.", nullable=False),
    ),
    primary_key=("batch_id",),
    group="ingest",
)

EV_REJECTED_MESSAGES = TableSpec(
    name="ev_rejected_messages",
    description=(
        "Quarantined records: each with the raw record as received, where it came from and every rule it failed."
    ),
    columns=(
        Col("rejection_id", pl.String(), "Deterministic id: hash of file content and record position.", nullable=False),
        Col("batch_id", pl.String(), "Micro-batch that quarantined it.", nullable=False),
        Col("file_name", pl.String(), "Landing file it came in.", nullable=False),
        Col("record_index", pl.Int64(), "Position of the record in its file (0-based).", nullable=False),
        Col("meter_id", pl.String(), "MeterID as received, when readable."),
        Col("raw_record", pl.String(), "The record as received, as JSON.", nullable=False),
        Col("reason_codes", pl.String(), "Comma-separated codes of every failed rule (see README).", nullable=False),
        Col("reasons", pl.String(), "JSON list of {code, field, message}: every failed rule in words.", nullable=False),
        Col("quarantined_at", UTC_DATETIME, "When it was quarantined.", nullable=False),
        Col(
            "status",
            pl.String(),
            "quarantined, or replayed (accepted or counted as duplicate on a replay).",
            nullable=False,
        ),
        Col("replayed_at", UTC_DATETIME, "When a replay released it."),
    ),
    primary_key=("rejection_id",),
    indexes=(("batch_id",), ("status",)),
    group="ingest",
)

EV_QUARANTINED_FILES = TableSpec(
    name="ev_quarantined_files",
    description="Landing files that could not be parsed at all, kept whole with the parser's error.",
    columns=(
        Col("file_name", pl.String(), "File name in the landing folder.", nullable=False),
        Col("file_sha256", pl.String(), "SHA-256 of the bytes.", nullable=False),
        Col("batch_id", pl.String(), "Micro-batch that read it.", nullable=False),
        Col("size_bytes", pl.Int64(), "Size in bytes.", nullable=False),
        Col("error", pl.String(), "Why it could not be parsed (the parser's error).", nullable=False),
        Col("content", pl.Binary(), "The file's bytes, as received.", nullable=False),
        Col("quarantined_at", UTC_DATETIME, "When it was quarantined.", nullable=False),
    ),
    primary_key=("file_name", "file_sha256"),
    group="ingest",
)

# --- work still to do, kept in the warehouse --------------------------------------------------
# What remains to do is kept in committed state, never in a process that may die: a batch whose
# events are committed but not yet paired, a day whose sessions changed but whose load is not
# recomputed yet. The step that makes the work queues it in the transaction that commits it; the
# step that does the work removes it in the same transaction that does the work. Each queue holds
# only what is still to do, so reading it costs the same however long the warehouse has run.

EV_BATCHES_PENDING = TableSpec(
    name="ev_batches_pending",
    description=(
        "Batches whose events wait to be paired into sessions. The ingest step queues its batch in the "
        "transaction that commits the batch's events; the sessions step pairs the queued batches, "
        "whoever runs it, after any crash, and removes them in the transaction that pairs them. "
        "Small (what is not paired yet), so finding the work costs the same after a million batches."
    ),
    columns=(
        Col("batch_id", pl.String(), "Micro-batch (ev_ingest_batches.batch_id).", nullable=False),
        Col(
            "queued_at",
            UTC_DATETIME,
            "When the batch was committed (ev_ingest_batches.processed_at): pairing goes oldest first.",
            nullable=False,
        ),
    ),
    primary_key=("batch_id",),
    group="ingest",
)

EV_BATCH_PAIRING = TableSpec(
    name="ev_batch_pairing",
    description=(
        "Batches whose events have been paired into sessions: the record of what was paired, with "
        "the sessions each pairing wrote (what waits for pairing is ev_batches_pending)."
    ),
    columns=(
        Col("batch_id", pl.String(), "Micro-batch (ev_ingest_batches.batch_id).", nullable=False),
        Col("sessions_written", pl.Int64(), "Sessions written when the batch was paired.", nullable=False),
        Col("paired_at", UTC_DATETIME, "When its sessions were paired.", nullable=False),
    ),
    primary_key=("batch_id",),
    group="ingest",
)

EV_LOAD_DAYS_PENDING = TableSpec(
    name="ev_load_days_pending",
    description=(
        "Local days whose sessions changed since their daily load was last computed. The daily-load "
        "sensor requests them; the daily-load step deletes them in the transaction that recomputes them."
    ),
    columns=(
        Col("load_date", pl.Date(), "Local date (EV_TIMEZONE).", nullable=False),
        Col("queued_at", UTC_DATETIME, "When the latest change to the day was committed.", nullable=False),
    ),
    primary_key=("load_date",),
    group="planning",
)

EV_METERS_PENDING = TableSpec(
    name="ev_meters_pending",
    description=(
        "Meters whose events must be attributed again after a reference load changed their chain "
        "(meter, service point, transformer, feeder; corrections may be dated in the past), or that "
        "had events waiting for their meter. stage attribute: the events step re-enriches every event "
        "of the meter; stage pair: the sessions step re-pairs its sessions and queues the changed days."
    ),
    columns=(
        Col("meter_id", pl.String(), "MeterID.", nullable=False),
        Col("stage", pl.String(), "attribute or pair.", nullable=False, checks=(pa.Check.isin(["attribute", "pair"]),)),
        Col("queued_at", UTC_DATETIME, "When the reference load queued it.", nullable=False),
    ),
    primary_key=("meter_id",),
    indexes=(("stage", "meter_id"),),
    group="reference",
)

EV_WAREHOUSE_SETTINGS = TableSpec(
    name="ev_warehouse_settings",
    description=(
        "Facts about the warehouse itself, one row per key. timezone: the EV_TIMEZONE its local "
        "days (event dates, daily partitions) were computed in; the pipeline refuses to run with another."
    ),
    columns=(
        Col("key", pl.String(), "Setting name, e.g. timezone.", nullable=False),
        Col("value", pl.String(), "Setting value, e.g. America/New_York.", nullable=False),
        Col("updated_at", UTC_DATETIME, "When the value was recorded.", nullable=False),
    ),
    primary_key=("key",),
)

EV_EVENT_COMMITS = TableSpec(
    name="ev_event_commits",
    description=(
        "One row per committed write of new events (an ingest or replay batch), numbered in commit order: the "
        "events API's stream (`/v1/ev-charging-events/stream`) follows commit_seq, so a consumer resuming after "
        "commit N sees every event committed later and none twice. The number is taken last in the writing "
        "transaction, under its own PostgreSQL advisory lock (SQLite: the single writer), so numbers grow in "
        "the order transactions become visible, even when writers run in parallel."
    ),
    columns=(
        Col(
            "commit_seq",
            pl.Int64(),
            "Commit sequence number: 1, 2, ... in the order the writes committed.",
            nullable=False,
        ),
        Col(
            "batch_id",
            pl.String(),
            "Micro-batch whose new events this commit wrote (ev_charging_events.batch_id).",
            nullable=False,
        ),
        Col("event_count", pl.Int64(), "New events the commit wrote.", nullable=False),
        Col(
            "committed_at",
            UTC_DATETIME,
            "When the writing transaction took its number (just before its commit).",
            nullable=False,
        ),
    ),
    primary_key=("commit_seq",),
    indexes=(("batch_id",),),
)

EV_VENDOR_EXPORTS = TableSpec(
    name="ev_vendor_exports",
    description=(
        "One row per vendor batch export landed (vendor_export_files): its received day (UTC), job id, the "
        "prefix of its landing files' names and how many it landed. Written by the export step once its files "
        "are in the landing folder; the gap sensor and vendor_export_gap read the day's latest export here "
        "(the file ledger then says whether all its files are ingested)."
    ),
    columns=(
        Col("job_id", pl.String(), "The vendor's export job id.", nullable=False),
        Col(
            "received_day",
            pl.Date(),
            "Received day (UTC) the export holds: ReceivedTime in [day, day+1).",
            nullable=False,
        ),
        Col(
            "file_prefix",
            pl.String(),
            "Its landing files' names start with this (export-<day>-<jobId>-).",
            nullable=False,
        ),
        Col("files", pl.Int64(), "Landing files the export wrote.", nullable=False),
        Col("records", pl.Int64(), "Records in those files.", nullable=False),
        Col("filetype", pl.String(), "File type the vendor exported (Parquet, Orc, Json or Csv).", nullable=False),
        Col(
            "landed_at",
            UTC_DATETIME,
            "When its files were in the landing folder: the day's latest export is the newest.",
            nullable=False,
        ),
    ),
    primary_key=("job_id",),
    indexes=(("received_day", "landed_at"),),
    group="ingest",
)

ALL_TABLES: tuple[TableSpec, ...] = (
    EV_CHARGING_EVENTS,
    EV_CHARGING_SESSIONS,
    TRANSFORMER_DAILY_LOAD,
    FEEDER_DAILY_LOAD,
    SUBSTATION_DAILY_LOAD,
    TRANSFORMER_INTERVAL_LOAD,
    FEEDER_INTERVAL_LOAD,
    SUBSTATION_INTERVAL_LOAD,
    PREMISE_EV_PROFILE,
    NEW_EVS,
    TRANSFORMER_PLANNING_QUEUE,
    EV_CHARGING_BEHAVIOR,
    TRANSFORMER_OVERLOAD_FORECAST,
    EV_INGEST_BATCHES,
    EV_FEED_FILES,
    EV_REJECTED_MESSAGES,
    EV_QUARANTINED_FILES,
    EV_BATCHES_PENDING,
    EV_BATCH_PAIRING,
    EV_LOAD_DAYS_PENDING,
    EV_METERS_PENDING,
    EV_WAREHOUSE_SETTINGS,
    EV_EVENT_COMMITS,
    EV_VENDOR_EXPORTS,
    *REFERENCE_TABLES.values(),
)


PARTITIONED_TABLES: tuple[TableSpec, ...] = tuple(spec for spec in ALL_TABLES if spec.partition_by_month)


def data_dictionary() -> str:
    """The data dictionary (docs/data-dictionary.md), generated from the declarations above."""
    return "\n\n".join(spec.markdown() for spec in ALL_TABLES)
