"""Contract stage: type every record, validate it with pandera, route each one to accepted or
rejected with every rule it failed. Pure polars + pandera; no Dagster, no database.

Three steps, each vectorised over the whole batch:
1. coerce: strings to typed columns (numbers, UTC timestamps), noting values that do not parse;
2. classify: start or end message from the fields present (spec: a start carries ChargeStartTime
   and ChargeW, an end ChargeEndTime, ChargeDuration and ChargeEnergy);
3. validate: one pandera schema per message type (types, nullability, ranges from the spec's
   data-values table; plausibility bounds from `ContractBounds`).
A record's failures never affect its neighbours: rules are evaluated per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandera.polars as pa
import polars as pl
import polars.selectors as cs

from ev_assets.core.feed import FIELDS

# --- the rules, by code: what a person reads in ev_rejected_messages ------------------------------
REJECTION_CODES: dict[str, str] = {
    "record_not_readable": "The record is not a flat JSON object of strings and numbers.",
    "invalid_identifier": "Identifiers must be 1 to 64 ASCII letters, digits, '.', '-' or '_'.",
    "invalid_number": "The value is not a finite number.",
    "invalid_timestamp": "The value is not an ISO-8601 date and time.",
    "timestamp_without_offset": "The timestamp has no UTC offset ('Z' or ±hh:mm); local times are never guessed.",
    "ambiguous_message_type": (
        "The record carries fields of both a start message (ChargeStartTime, ChargeW) and an end message "
        "(ChargeEndTime, ChargeDuration, ChargeEnergy)."
    ),
    "no_charge_fields": (
        "The record carries none of ChargeStartTime, ChargeW, ChargeEndTime, ChargeDuration, ChargeEnergy."
    ),
    "missing_required_field": "A field this message type requires is missing or blank.",
    "non_positive_value": "ChargeW, ChargeDuration and ChargeEnergy must be > 0 (spec).",
    "charge_w_implausible": "ChargeW is outside the home-charger range (EV_CHARGE_W_MIN..EV_CHARGE_W_MAX).",
    "energy_implausible": "ChargeEnergy exceeds the largest plausible session (EV_MAX_SESSION_WH).",
    "received_before_event": (
        "ReceivedTime is earlier than the event by more than the clock-skew allowance (EV_CLOCK_SKEW_S)."
    ),
    "received_in_future": "ReceivedTime is later than now plus the clock-skew allowance.",
    "event_in_future": "The event time is later than now plus the clock-skew allowance.",
    "conflicting_duplicate": (
        "The record has the identity (meter, message type, message time) of an accepted message but "
        "different content (times compared to the millisecond, numbers to a relative 1e-6; ReceivedTime "
        "ignored): the first accepted message is kept and its values are the session's."
    ),
}

IDENTIFIER_FIELDS = ("ServicePointID", "MeterID", "MeterNumber", "ESN", "TransformerID", "PremiseID")
NUMBER_FIELDS = {"ChargeW": "charge_w", "ChargeDuration": "charge_duration", "ChargeEnergy": "charge_energy_wh"}
TIME_FIELDS = {
    "ReceivedTime": "received_time",
    "ChargeStartTime": "charge_start_time",
    "ChargeEndTime": "charge_end_time",
}
START_FIELDS = ("ChargeStartTime", "ChargeW")
END_FIELDS = ("ChargeEndTime", "ChargeDuration", "ChargeEnergy")

# Typed column -> the spec's field name, for reasons a person can match against the payload.
SPEC_NAME: dict[str, str] = {
    "meter_id": "MeterID",
    "service_point_id": "ServicePointID",
    "meter_number": "MeterNumber",
    "esn": "ESN",
    "transformer_id": "TransformerID",
    "premise_id": "PremiseID",
    **{typed: spec for spec, typed in NUMBER_FIELDS.items()},
    **{typed: spec for spec, typed in TIME_FIELDS.items()},
}
TYPED_NAME = {spec: typed for typed, spec in SPEC_NAME.items()}

_IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
_HAS_OFFSET = r"(?i)(z|[+-]\d{2}:?\d{2})$"
_ISO_WITH_OFFSET = "%Y-%m-%dT%H:%M:%S%.f%z"
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"
UTC_DATETIME = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class ContractBounds:
    """Plausibility bounds: configuration, not constants (DOMAIN.md marks them assumptions)."""

    # Home chargers: Level 1 about 1.4 kW up to Level 2 19.2 kW (DOMAIN.md), with a margin.
    charge_w_min: float = 900.0
    charge_w_max: float = 21_120.0
    max_session_wh: float = 150_000.0
    clock_skew: timedelta = timedelta(minutes=10)
    # Unit of the reported ChargeDuration: documented as hours, which the spec's own example
    # contradicts (DOMAIN.md). Only the duration-agreement check uses it.
    duration_unit: str = "hours"

    @property
    def duration_unit_seconds(self) -> float:
        return DURATION_UNITS[self.duration_unit]


DURATION_UNITS = {"hours": 3600.0, "minutes": 60.0, "seconds": 1.0}


@dataclass
class ContractResult:
    """accepted: typed messages; rejected: one row per rejected record with its reasons."""

    accepted: pl.DataFrame
    rejected: pl.DataFrame


# --- 1. coerce ---------------------------------------------------------------------------------


def _blank_to_null(name: str) -> pl.Expr:
    value = pl.col(name).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value).alias(name)


FLAG_PREFIX = "_fails|"


def coerce(records: pl.DataFrame) -> pl.DataFrame:
    """Typed columns, beside one boolean column per parse rule and field ("_fails|code|field").

    Flags rather than a list of problems per row: building lists costs as much for a clean row as
    for a bad one, flags cost nothing until `parse_failures` reads the few rows that have one.
    """
    stripped = records.with_columns([_blank_to_null(f) for f in FIELDS])
    typed = []
    problems = []
    for spec, typed_name in NUMBER_FIELDS.items():
        number = pl.col(spec).cast(pl.Float64, strict=False)
        typed.append(pl.when(number.is_finite()).then(number).otherwise(None).alias(typed_name))
        problems.append(
            _problem(pl.col(spec).is_not_null() & ~number.is_finite().fill_null(False), "invalid_number", spec)
        )
    for spec, typed_name in TIME_FIELDS.items():
        text = pl.col(spec)
        with_offset = text.str.replace(r"(?i)z$", "+00:00").str.to_datetime(
            _ISO_WITH_OFFSET, strict=False, time_zone="UTC", time_unit="us"
        )
        has_offset = text.str.contains(_HAS_OFFSET)
        naive = text.str.to_datetime(_ISO_NAIVE, strict=False, time_unit="us")
        typed.append(pl.when(has_offset).then(with_offset).otherwise(None).alias(typed_name))
        problems.append(
            _problem(text.is_not_null() & ~has_offset & naive.is_not_null(), "timestamp_without_offset", spec)
        )
        problems.append(
            _problem(
                text.is_not_null() & with_offset.is_null() & ~(~has_offset & naive.is_not_null()),
                "invalid_timestamp",
                spec,
            )
        )
    for spec in IDENTIFIER_FIELDS:
        typed.append(pl.col(spec).alias(TYPED_NAME[spec]))
        problems.append(
            _problem(pl.col(spec).is_not_null() & ~pl.col(spec).str.contains(_IDENTIFIER), "invalid_identifier", spec)
        )
    # Identity fields every message needs, whatever its type (checked again by pandera per type).
    for spec in ("MeterID", "ReceivedTime"):
        problems.append(_problem(pl.col(spec).is_null(), "missing_required_field", spec))
    problems.append(_problem(pl.col("record_problems").is_not_null(), "record_not_readable", ""))
    return stripped.with_columns(*typed, *problems)


def _problem(failed: pl.Expr, code: str, spec_field: str) -> pl.Expr:
    return failed.fill_null(False).alias(f"{FLAG_PREFIX}{code}|{spec_field}")


def parse_failures(frame: pl.DataFrame) -> pl.DataFrame:
    """(_row, code, field, detail) of every parse rule a row failed, from the flag columns."""
    flags = [c for c in frame.columns if c.startswith(FLAG_PREFIX)]
    rule = pl.col("flag").str.strip_prefix(FLAG_PREFIX).str.split_exact("|", 1)
    return (
        frame.filter(pl.any_horizontal(flags))
        .select("_row", "record_problems", *flags)
        .unpivot(index=["_row", "record_problems"], variable_name="flag", value_name="failed")
        .filter(pl.col("failed"))
        .select(
            "_row",
            rule.struct.field("field_0").alias("code"),
            pl.when(rule.struct.field("field_1") != "").then(rule.struct.field("field_1")).alias("field"),
            pl.when(rule.struct.field("field_0") == "record_not_readable")
            .then(pl.col("record_problems"))
            .alias("detail"),
        )
        .sort("_row", maintain_order=True)
    )


# --- 2. classify -------------------------------------------------------------------------------


def classify(frame: pl.DataFrame) -> pl.DataFrame:
    """message_type: start, end, ambiguous or none, from the fields present (as received)."""
    any_start = pl.any_horizontal([pl.col(f).is_not_null() for f in START_FIELDS])
    any_end = pl.any_horizontal([pl.col(f).is_not_null() for f in END_FIELDS])
    return frame.with_columns(
        pl.when(any_start & any_end)
        .then(pl.lit("ambiguous"))
        .when(any_start)
        .then(pl.lit("start"))
        .when(any_end)
        .then(pl.lit("end"))
        .otherwise(pl.lit("none"))
        .alias("message_type")
    ).with_columns(
        pl.when(pl.col("message_type") == "start")
        .then(pl.col("charge_start_time"))
        .otherwise(pl.col("charge_end_time"))
        .alias("message_time")
    )


# --- 3. validate (pandera) ----------------------------------------------------------------------


def message_schema(message_type: str, bounds: ContractBounds, now: datetime) -> pa.DataFrameSchema:
    """The contract for one message type, from the spec's data-values table and the bounds.

    Each check's `error` is its rejection code: pandera reports it in failure_cases["check"].
    """
    latest = now + bounds.clock_skew
    is_start = message_type == "start"

    def required(dtype, *checks: pa.Check) -> pa.Column:
        return pa.Column(dtype, checks=list(checks), nullable=False)

    def optional(dtype, *checks: pa.Check) -> pa.Column:
        return pa.Column(dtype, checks=list(checks), nullable=True)

    def positive() -> pa.Check:
        return pa.Check.gt(0, error="non_positive_value")

    columns = {
        "meter_id": required(pl.String),
        "service_point_id": optional(pl.String),
        "meter_number": optional(pl.String),
        "esn": optional(pl.String),
        "transformer_id": optional(pl.String),
        "premise_id": optional(pl.String),
        "received_time": required(UTC_DATETIME, pa.Check.le(latest, error="received_in_future")),
        "message_time": optional(UTC_DATETIME, pa.Check.le(latest, error="event_in_future")),
    }
    if is_start:
        columns |= {
            "charge_start_time": required(UTC_DATETIME),
            "charge_w": required(
                pl.Float64,
                positive(),
                pa.Check.in_range(bounds.charge_w_min, bounds.charge_w_max, error="charge_w_implausible"),
            ),
        }
    else:
        columns |= {
            "charge_end_time": required(UTC_DATETIME),
            "charge_duration": required(pl.Float64, positive()),
            "charge_energy_wh": required(
                pl.Float64, positive(), pa.Check.le(bounds.max_session_wh, error="energy_implausible")
            ),
        }
    skew = bounds.clock_skew

    def received_after_event(data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("received_time") >= pl.col("message_time") - skew)

    return pa.DataFrameSchema(
        columns,
        checks=[pa.Check(received_after_event, error="received_before_event")],
        name=f"{message_type}_message",
    )


def _schema_failures(frame: pl.DataFrame, schema: pa.DataFrameSchema) -> pl.DataFrame:
    """(row, code, field) of every pandera failure; row is the frame's `_row` column."""
    columns = list(schema.columns)
    try:
        schema.validate(frame.select(columns), lazy=True)
        return _no_failures()
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    codes = pl.col("check").replace({"not_nullable": "missing_required_field"})
    return cases.filter(pl.col("index").is_not_null()).select(
        frame["_row"].gather(cases.filter(pl.col("index").is_not_null())["index"].cast(pl.Int64)).alias("_row"),
        codes.alias("code"),
        pl.col("column").replace_strict(SPEC_NAME, default=None).alias("field"),
    )


def _no_failures() -> pl.DataFrame:
    return pl.DataFrame(schema={"_row": pl.Int64, "code": pl.String, "field": pl.String})


# --- the stage ---------------------------------------------------------------------------------


def apply_contract(records: pl.DataFrame, bounds: ContractBounds, now: datetime | None = None) -> ContractResult:
    """Split the records into accepted typed messages and rejected records with their reasons."""
    now = now or datetime.now(UTC)
    frame = classify(coerce(records)).with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"))

    parsed_failures = parse_failures(frame)
    type_failures = frame.filter(pl.col("message_type").is_in(["ambiguous", "none"])).select(
        "_row",
        pl.when(pl.col("message_type") == "ambiguous")
        .then(pl.lit("ambiguous_message_type"))
        .otherwise(pl.lit("no_charge_fields"))
        .alias("code"),
        pl.lit(None, pl.String).alias("field"),
        pl.lit(None, pl.String).alias("detail"),
    )
    schema_failures = pl.concat(
        [
            _schema_failures(frame.filter(pl.col("message_type") == kind), message_schema(kind, bounds, now))
            for kind in ("start", "end")
        ]
    )
    # A value that did not parse is null to pandera: keep its parse reason, not "missing" as well.
    schema_failures = schema_failures.join(
        parsed_failures.select("_row", "field").unique(), on=["_row", "field"], how="anti"
    ).with_columns(pl.lit(None, pl.String).alias("detail"))
    failures = pl.concat([parsed_failures, type_failures, schema_failures]).unique(maintain_order=True)

    message = pl.col("code").replace_strict(REJECTION_CODES, default="")
    reasons = (
        failures.with_columns(
            pl.when(pl.col("detail").is_null())
            .then(message)
            .otherwise(pl.concat_str([message, pl.lit(" "), pl.col("detail")]))
            .alias("message")
        )
        .group_by("_row", maintain_order=True)
        .agg(
            pl.col("code").unique(maintain_order=True).str.join(",").alias("reason_codes"),
            pl.struct("code", "field", "message").struct.json_encode().str.join(",").alias("_reasons"),
        )
    )
    flagged = frame.join(reasons, on="_row", how="left")
    accepted = flagged.filter(pl.col("reason_codes").is_null()).drop(
        "_row", "reason_codes", "_reasons", cs.starts_with(FLAG_PREFIX)
    )
    rejected = flagged.filter(pl.col("reason_codes").is_not_null()).select(
        "file_name",
        "file_sha256",
        "record_index",
        # As received, except NUL, which PostgreSQL text cannot hold: written as the JSON escape
        # (raw_record keeps the exact value).
        pl.col("MeterID").str.replace_all("\x00", "\\u0000", literal=True).alias("meter_id"),
        "reason_codes",
        pl.concat_str([pl.lit("["), pl.col("_reasons"), pl.lit("]")]).alias("reasons"),
    )
    return ContractResult(accepted=accepted, rejected=rejected)
