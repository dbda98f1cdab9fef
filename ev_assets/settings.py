"""One typed settings object: every setting of the pipeline, its environment variable, default and
meaning, and when it is read.

- **load**: read when the code location loads (partitions, schedules and sensor intervals are fixed
  there); change it and restart `dagster dev` / the daemon.
- **run**: read when a run starts (resources are configured from the environment then), so a
  change applies to the next run.
- **receiver start**: read when `ev-awareness receive` starts; restart the receiver to change it.
- **live start**: read when `ev-awareness live` starts; restart the live service to change it.
- **instance load**: read by Dagster itself whenever a process opens the instance (daemon, webserver,
  CLI, run workers), through an `env:` reference that `ev-awareness init` writes in `dagster.yaml`.

Reading settings writes nothing: no file, no environment variable.

This class is the one declaration of every setting: its environment variable, default, meaning, when it
is read, and which Dagster resource (and field of it) configures it. From it come the resources' fields
(`ev_assets/defs/resources.py`), the pipeline's plain config (`PipelineSettings.from_settings` in
`ev_assets/pipeline/config.py`) and the table in `docs/settings.md`
(`python -m ev_assets.warehouse.data_dictionary`); `test_settings.py` keeps the three in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ev_assets.core.load_profile import DEFAULT_CHUNK_DAYS
from ev_assets.core.premise_profile import DEFAULT_TOU_ON_PEAK
from ev_assets.core.transformer_aging import DEFAULT_AMBIENT_C, DEFAULT_BASE_LOAD_PU, parse_base_profile

PROJECT_ROOT = Path(__file__).resolve().parent.parent


LOAD = "load"
RUN = "run"
RECEIVER = "receiver start"
LIVE = "live start"
INSTANCE = "instance load"


# The Dagster resources (by their key in the code location) a setting can belong to.
WAREHOUSE = "warehouse"
FEED = "feed_landing"
REFERENCE = "reference"
PIPELINE = "pipeline_config"


def _setting(
    default,
    description: str,
    read: str,
    *,
    resource: str | None = None,
    resource_field: str | None = None,
    secret: bool = False,
    **kwargs,
):
    """A setting's declaration. `resource`: the Dagster resource whose field overrides it in a run
    (`resource_field`: that field's name, when not the setting's own); `secret`: it reaches runs only
    as an `EnvVar`, never as a value in run configuration."""
    extra: dict[str, Any] = {"read": read, "secret": secret}
    if resource:
        extra["resource"] = resource
        if resource_field:
            extra["resource_field"] = resource_field
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class Settings(BaseSettings):
    """The pipeline's settings, from `EV_*` environment variables (and `DAGSTER_HOME`)."""

    model_config = SettingsConfigDict(env_prefix="EV_", extra="ignore", frozen=True)

    feed_dir: Path = _setting(
        PROJECT_ROOT / "data" / "landing",
        "Landing folder of the agent feed (`*.json`; writers rename complete files into place).",
        RUN,
        resource=FEED,
        resource_field="landing_dir",
    )
    reference_dir: Path = _setting(
        PROJECT_ROOT / "data" / "reference",
        "The utility's reference extracts (CSV), loaded before the events that need them.",
        RUN,
        resource=REFERENCE,
        resource_field="reference_dir",
    )
    warehouse_url: str = _setting(
        f"sqlite:///{PROJECT_ROOT / 'data' / 'warehouse' / 'ev.sqlite'}",
        "Any SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db`. A secret: resources read it "
        "through `EnvVar`, so it is never stored in run configuration.",
        RUN,
        resource=WAREHOUSE,
        resource_field="url",
        secret=True,
    )
    timezone: str = _setting(
        "America/New_York",
        "The utility's local time: event dates, daily partitions, schedules. The warehouse records "
        "it, and refuses a run under another one.",
        LOAD,
        resource=PIPELINE,
    )
    partitions_start: date = _setting(
        date(2010, 1, 1),
        "First local day of the daily partitions. Unset, the day `ev-awareness init` recorded in "
        "DAGSTER_HOME/ev_partitions_start is used (the warehouse's first event day, or a week before a new "
        "deployment's init), else this default. A day before it is never dropped silently: the "
        "`load_days_within_partitions` check fails and names the days.",
        LOAD,
    )
    # A batch is one ingest run: fewer, larger batches pay Dagster's per-run cost (run creation,
    # event log) less often. Bytes bound its memory (about 15x the JSON's size at the ingest step);
    # files and messages are backstops. A sensor tick only sees what landed since the last one.
    batch_max_files: int = _setting(
        20_000,
        "Micro-batch bound: files per ingest run.",
        RUN,
        gt=0,
        resource=FEED,
        resource_field="max_files_per_batch",
    )
    batch_max_messages: int = _setting(
        200_000,
        "Micro-batch bound: messages per ingest run.",
        RUN,
        gt=0,
        resource=FEED,
        resource_field="max_messages_per_batch",
    )
    batch_max_bytes: int = _setting(
        40_000_000,
        "Micro-batch bound: bytes of landing files per ingest run (unless one file alone is larger). The bound "
        "that follows memory: the ingest step holds about 8 bytes per byte of JSON at its peak (36.5 MB, "
        "101,498 messages of the agent feed: +295 MB), so 40 MB (about 110,000 messages) stays under 400 MB.",
        RUN,
        gt=0,
        resource=FEED,
        resource_field="max_bytes_per_batch",
    )
    feed_sensor_interval_s: int = _setting(30, "How often the feed sensor looks for new files, s.", LOAD, gt=0)
    load_sensor_interval_s: int = _setting(
        30, "How often the daily-load sensor looks for days to recompute, s.", LOAD, gt=0
    )
    lock_wait_s: float = _setting(
        60.0,
        "How long a writer waits for the warehouse's write lock before its step fails (and retries "
        "itself): the SQLite busy timeout and the PostgreSQL lock_timeout, s.",
        RUN,
        gt=0,
    )
    partition_months_ahead: int = _setting(
        3,
        "PostgreSQL: months after the current one whose history partitions are made ahead (by `ev-awareness db "
        "upgrade`, `init` and the daily `month_partitions_schedule`); a row of a month without its partition "
        "waits in the DEFAULT partition until the next of those moves it out.",
        RUN,
        ge=0,
    )
    charge_w_min: float = _setting(
        900.0,
        "Plausible ChargeW, lower bound, W (home chargers 1-19.2 kW with a margin).",
        RUN,
        resource=PIPELINE,
    )
    charge_w_max: float = _setting(21_120.0, "Plausible ChargeW, upper bound, W.", RUN, resource=PIPELINE)
    max_session_wh: float = _setting(150_000.0, "Largest plausible ChargeEnergy, Wh.", RUN, resource=PIPELINE)
    clock_skew_s: float = _setting(
        600.0, "How far ReceivedTime may precede the event, or lie in the future, s.", RUN, resource=PIPELINE
    )
    duration_unit: Literal["hours", "minutes", "seconds"] = _setting(
        "hours",
        "Unit of the reported ChargeDuration: only the agreement check uses it.",
        RUN,
        resource=PIPELINE,
    )
    duration_unit_verified: bool = _setting(
        False,
        "The reported ChargeDuration is known to be in EV_DURATION_UNIT (e.g. the `duration_agreement` check "
        "holds on this feed): sessions whose reported duration disagrees with end - start are then flagged "
        "`duration_mismatch`.",
        RUN,
        resource=PIPELINE,
    )
    max_session_h: float = _setting(
        48.0,
        "Longest ordinary session, h: a start and an end further apart pair only when the end's energy "
        "fits ChargeW x duration x EV_CHARGE_W_TOLERANCE; a start with no end for longer is `timed_out`.",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    charge_w_tolerance: float = _setting(
        1.1,
        "How far a session's average power (energy / duration) may exceed its own ChargeW: beyond it a "
        "session is flagged `power_above_charge_w`, and a start and end more than EV_MAX_SESSION_H apart do not pair.",
        RUN,
        ge=1,
        resource=PIPELINE,
    )
    power_factor: float = _setting(0.9, "Peak kW -> kVA for utilization.", RUN, gt=0, le=1, resource=PIPELINE)
    rejection_rate_warn: float = _setting(
        0.05, "Rejection rate above which the `rejection_rate` check warns.", RUN, resource=PIPELINE
    )
    flagged_share_warn: float = _setting(
        0.02,
        "Share of the written complete sessions with quality flags above which the `flagged_share` check warns.",
        RUN,
        resource=PIPELINE,
    )
    load_shape: Literal["charge_w_then_idle", "even"] = _setting(
        "charge_w_then_idle",
        "How a session's energy becomes 15-minute load: `charge_w_then_idle` draws ChargeW from the start "
        "until the energy is delivered when the average power is below EV_LOAD_SHAPE_IDLE_RATIO x ChargeW "
        "(a car left plugged in); `even` spreads the energy over the whole session.",
        RUN,
        resource=PIPELINE,
    )
    load_shape_idle_ratio: float = _setting(
        0.8,
        "Average power below this share of ChargeW counts as charged-then-idle.",
        RUN,
        gt=0,
        le=1,
        resource=PIPELINE,
    )
    planning_threshold: float = _setting(
        1.0,
        "Planning threshold of the overload exposure, as a share of a transformer's rating (kVA x "
        "EV_POWER_FACTOR in kW): transformer_daily_load counts minutes, kWh and the longest stretch above it.",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    ambient_c: float = _setting(
        DEFAULT_AMBIENT_C,
        "Ambient temperature, °C, of the transformer aging (IEEE C57.91 clause 7) in transformer_daily_load: "
        "hot_spot_max_c, aging_factor_max, equivalent_aging, loss_of_life_h.",
        RUN,
        resource=PIPELINE,
    )
    base_load_pu_profile: str = _setting(
        ",".join(f"{v:g}" for v in DEFAULT_BASE_LOAD_PU),
        "Non-EV (base) load of a transformer for the aging, per-unit of its rating: 24 comma-separated values, "
        "local hours 0-23 (default: a residential shape peaking at 0.6 pu at 19:00).",
        RUN,
        resource=PIPELINE,
    )
    base_load_scale: float = _setting(
        1.0,
        "Multiplies EV_BASE_LOAD_PU_PROFILE (e.g. 0.8 for a lightly loaded service area).",
        RUN,
        ge=0,
        resource=PIPELINE,
    )
    planning_window_days: int = _setting(
        90,
        "transformer_planning_queue: the rolling window, local days up to the latest day of transformer_daily_load.",
        RUN,
        gt=1,
        resource=PIPELINE,
    )
    risk_weight_utilization: float = _setting(
        1.0,
        "transformer_planning_queue: weight of peak_utilization in risk_score.",
        RUN,
        resource=PIPELINE,
    )
    risk_weight_hours_over_rating: float = _setting(
        1.0,
        "transformer_planning_queue: weight of the hours over rating per day of the window.",
        RUN,
        resource=PIPELINE,
    )
    risk_weight_loss_of_life: float = _setting(
        1.0,
        "transformer_planning_queue: weight of the window's equivalent aging, loss_of_life_h / (24 x window days).",
        RUN,
        resource=PIPELINE,
    )
    risk_weight_ev_growth: float = _setting(
        0.1,
        "transformer_planning_queue: weight of ev_count_growth (EVs added between the window's halves).",
        RUN,
        resource=PIPELINE,
    )
    risk_weight_overload_soon: float = _setting(
        1.0,
        (
            "transformer_planning_queue: weight of 1 / years_to_likely_overload (the overload forecast's first "
            "year with a >= 50 % chance of exceeding the planning threshold)."
        ),
        RUN,
        resource=PIPELINE,
    )
    forecast_years: int = _setting(
        10,
        "transformer_overload_forecast: calendar years forecast, from the year after the latest day of the history.",
        RUN,
        gt=0,
        le=30,
        resource=PIPELINE,
    )
    forecast_draws: int = _setting(
        500,
        "transformer_overload_forecast: Monte Carlo draws per transformer and year (EV counts and peaks).",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    forecast_seed: int = _setting(
        28,
        "transformer_overload_forecast: the seed of every random draw (same inputs, same rows).",
        RUN,
        resource=PIPELINE,
    )
    forecast_library_days: int = _setting(
        60,
        "transformer_overload_forecast: simulated days per transformer and season x day type from which the "
        "year's daily peaks are drawn (more: finer tails, more time; memory 4 x 8 x transformers x days x (EVs + 1) "
        "float32).",
        RUN,
        gt=10,
        resource=PIPELINE,
    )
    forecast_adoption_scenarios: str = _setting(
        "low:0.3:0.7;base:0.5:1.0;high:0.8:1.3",
        "transformer_overload_forecast: adoption scenarios `name:saturation:rate_multiplier` separated by `;`: the "
        "share of premises that ever has an EV (the logistic's ceiling) and a factor on the fitted growth rate.",
        RUN,
        resource=PIPELINE,
    )
    forecast_adoption_prior_evs: float = _setting(
        10.0,
        "Adoption fit: weight, in EVs, of the utility-wide curve in each feeder's fit (a feeder with this many "
        "EVs is fitted half on its own history, half on the utility's).",
        RUN,
        ge=0,
        resource=PIPELINE,
    )
    forecast_managed_share: float = _setting(
        0.5,
        "Managed-charging scenario: share of sessions starting outside EV_FORECAST_MANAGED_WINDOW moved into it.",
        RUN,
        ge=0,
        le=1,
        resource=PIPELINE,
    )
    forecast_managed_window: str = _setting(
        "22:00-06:00",
        "Managed-charging scenario: the off-peak window, local `hh:mm-hh:mm` (may wrap midnight); a moved "
        "session starts at a uniform time in it.",
        RUN,
        resource=PIPELINE,
    )
    forecast_backtest_months: int = _setting(
        6,
        "Backtest of the forecast: the last this many whole months of the history are forecast from the history "
        "before them and compared with what happened.",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    forecast_calibration_tolerance: float = _setting(
        0.1,
        "Backtest check: passes when the share of transformer-months under P50 is within this of 0.5 and under "
        "P90 within this of 0.9.",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    tou_on_peak: str = _setting(
        DEFAULT_TOU_ON_PEAK,
        "On-peak windows of the time-of-use rate, local time, for premise_ev_profile.on_peak_energy_share: "
        "`days hh:mm-hh:mm` separated by `;` (days: mon..sun, a range `mon-fri` or a list `sat,sun`; times on "
        "15-minute boundaries, 24:00 allowed as an end).",
        RUN,
        resource=PIPELINE,
    )
    new_ev_days: int = _setting(
        30,
        "new_evs: premises first seen charging in this many days up to the latest day with sessions.",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    load_chunk_days: int = _setting(
        DEFAULT_CHUNK_DAYS,
        "Days the daily load computes and writes at a time inside one range run's transaction (bounds its "
        "memory: a day of 20,000 transformers holds about 17 MB of 15-minute intervals and profiles).",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    rebuild_chunk_meters: int = _setting(
        2000,
        "Meters per chunk when sessions are rebuilt in full (bounds the memory of a rebuild).",
        RUN,
        gt=0,
        resource=PIPELINE,
    )
    dagster_storage_url: str | None = _setting(
        None,
        "PostgreSQL URL of the Dagster instance's storage (runs, event log, schedules, sensor cursors; "
        "`dagster-postgres`), e.g. `postgresql+psycopg2://user@host/dagster` (dagster-postgres needs the psycopg2 "
        "driver): the production setup. Unset: SQLite "
        "files under DAGSTER_HOME. With it set, `ev-awareness init` writes dagster-postgres's `run_storage` and "
        "`schedule_storage` and the batching `event_log_storage` with `postgres_url: {env: EV_DAGSTER_STORAGE_URL}` "
        "into `dagster.yaml` (the secret stays in the environment, never in the file) and creates the instance's "
        "tables; every process that opens the instance needs it.",
        INSTANCE,
    )
    receiver_token_sha256s: str = _setting(
        "",
        "Stream receiver (`ev-awareness receive`): comma-separated SHA-256 hashes (hex) of the bearer tokens "
        "it accepts; tokens are never stored in clear (`ev-awareness receiver-token` makes one). Empty: "
        "every push is refused.",
        RECEIVER,
    )
    receiver_max_bytes: int = _setting(
        10_000_000, "Stream receiver: largest request body, bytes (larger: 413).", RECEIVER, gt=0
    )
    receiver_rate_per_s: float = _setting(
        50.0,
        "Stream receiver: pushes per second per token, sustained (token bucket; more: 429). 0: unlimited.",
        RECEIVER,
        ge=0,
    )
    receiver_rate_burst: float = _setting(
        100.0, "Stream receiver: pushes a token may make at once before EV_RECEIVER_RATE_PER_S applies.", RECEIVER, ge=1
    )
    receiver_tls_cert: Path | None = _setting(
        None, "Stream receiver: TLS certificate (PEM); with EV_RECEIVER_TLS_KEY the receiver serves HTTPS.", RECEIVER
    )
    receiver_tls_key: Path | None = _setting(None, "Stream receiver: TLS private key (PEM).", RECEIVER)

    api_key_sha256s: str = _setting(
        "",
        "Events API (`ev-awareness serve`): comma-separated API keys as SHA-256 hashes (hex), each optionally "
        "limited to entity types as `hash:Meter|Transformer`; sent as `Authorization: Bearer <key>`. Empty: no "
        "key is asked for and the API serves 127.0.0.1 only.",
        RECEIVER,
    )
    api_max_entity_ids: int = _setting(
        1000, "Events API: most EntityId values in one request (more: 422).", RECEIVER, gt=0
    )
    api_page_size_max: int = _setting(10_000, "Events API: largest page (PageSize) of one response.", RECEIVER, gt=0)

    live_state_path: Path = _setting(
        PROJECT_ROOT / "data" / "live" / "live.sqlite",
        "Live service (`ev-awareness live`): its own SQLite file of durable state (files processed, open "
        "sessions, transformer and alert state, the outbox of messages and each publisher's cursor).",
        LIVE,
    )
    live_poll_interval_s: float = _setting(
        0.15, "Live service: how often it looks for new files in EV_FEED_DIR, s.", LIVE, gt=0
    )
    live_sweep_interval_s: float = _setting(
        30.0,
        "Live service: how often every transformer's state is evaluated again without a new message (the base "
        "load follows the local hour; sessions open longer than EV_MAX_SESSION_H time out), s.",
        LIVE,
        gt=0,
    )
    live_alert_hysteresis: float = _setting(
        0.05,
        "Live overload alert: raised when (live EV kVA + base kVA) / rating exceeds EV_PLANNING_THRESHOLD, "
        "cleared only once it is below EV_PLANNING_THRESHOLD minus this (a share of the rating).",
        LIVE,
        ge=0,
    )
    mqtt_host: str = _setting("127.0.0.1", "Live service: MQTT broker host (MQTT 5).", LIVE)
    mqtt_port: int = _setting(1883, "Live service: MQTT broker port.", LIVE, gt=0, lt=65536)
    mqtt_client_id: str = _setting(
        "ev-awareness-live", "Live service: MQTT client id (one per running live service).", LIVE
    )
    mqtt_username: str = _setting("", "Live service: MQTT user name (empty: none).", LIVE)
    mqtt_password: str = _setting("", "Live service: MQTT password (a secret: keep it in the environment).", LIVE)
    mqtt_topic_prefix: str = _setting(
        "ev",
        "Live service: first level of every topic (`<prefix>/transformer/<TransformerID>/events|state|alert`).",
        LIVE,
    )
    live_webhook_urls: str = _setting(
        "",
        "Live service: comma-separated URLs each message is POSTed to as JSON (empty: no webhooks); each URL "
        "has its own cursor on the outbox.",
        LIVE,
    )
    live_webhook_secret: str = _setting(
        "",
        "Live service: the key of the HMAC-SHA256 of each webhook body, sent hex-encoded in the "
        "`X-EV-Signature: sha256=<hex>` header (a secret: keep it in the environment).",
        LIVE,
    )
    live_webhook_max_backoff_s: float = _setting(
        60.0,
        "Live service: longest wait between two attempts of a failed webhook delivery (the waits double from "
        "0.5 s up to this), s.",
        LIVE,
        gt=0,
    )

    @field_validator("forecast_adoption_scenarios")
    @classmethod
    def _scenarios(cls, value: str) -> str:
        from ev_assets.core.forecast import parse_scenarios

        parse_scenarios(value)
        return value

    @field_validator("forecast_managed_window")
    @classmethod
    def _managed_window(cls, value: str) -> str:
        from ev_assets.core.forecast import parse_window

        parse_window(value)
        return value

    @field_validator("base_load_pu_profile")
    @classmethod
    def _base_profile(cls, value: str) -> str:
        parse_base_profile(value)  # 24 non-negative values, or a ValueError naming the text
        return value

    @field_validator("dagster_storage_url")
    @classmethod
    def _postgres_storage(cls, value: str | None) -> str | None:
        # dagster-postgres sends `NOTIFY channel, <bound parameter>` with every event, which only
        # psycopg2's client-side binding accepts: psycopg 3 (SQLAlchemy 2.1's default for a bare
        # `postgresql://`) fails the first run. Anything else would fail later, deep inside Dagster.
        if not value:
            return None
        from sqlalchemy.engine import make_url

        if make_url(value).drivername != "postgresql+psycopg2":
            raise ValueError(
                "EV_DAGSTER_STORAGE_URL must be a PostgreSQL URL with the psycopg2 driver, "
                "postgresql+psycopg2://user@host/db (dagster-postgres needs psycopg2)"
            )
        return value

    @property
    def receiver_token_hashes(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.receiver_token_sha256s.split(",") if h.strip())


def dagster_home() -> Path:
    """DAGSTER_HOME, or the project's `.dagster_home` (what the CLI and `make ui` use)."""
    import os

    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")


def environment_variable(field_name: str) -> str:
    return f"EV_{field_name.upper()}"


@dataclass(frozen=True)
class Declaration:
    """One setting as `Settings` declares it."""

    name: str
    env_var: str
    annotation: Any
    default: Any
    description: str
    read: str
    resource: str | None
    resource_field: str | None
    secret: bool


def declarations(settings_class: type[Settings] = Settings) -> list[Declaration]:
    """Every setting of `settings_class`, in declaration order."""
    out = []
    for name, info in settings_class.model_fields.items():
        extra = info.json_schema_extra or {}
        resource = extra.get("resource")
        out.append(
            Declaration(
                name=name,
                env_var=environment_variable(name),
                annotation=info.annotation,
                default=info.default,
                description=info.description or "",
                read=extra.get("read", RUN),
                resource=resource,
                resource_field=extra.get("resource_field", name) if resource else None,
                secret=bool(extra.get("secret")),
            )
        )
    return out


def resource_declarations(resource: str, settings_class: type[Settings] = Settings) -> list[Declaration]:
    """The settings a Dagster resource (by its key) overrides, in declaration order."""
    return [d for d in declarations(settings_class) if d.resource == resource]


def _shown_default(default: Any) -> str:
    if isinstance(default, Path):
        return default.relative_to(PROJECT_ROOT).as_posix()
    if isinstance(default, str) and default.startswith("sqlite:///") and str(PROJECT_ROOT) in default:
        return "sqlite:///" + Path(default.removeprefix("sqlite:///")).relative_to(PROJECT_ROOT).as_posix()
    if isinstance(default, float) and default.is_integer() and default >= 1000:
        return f"{int(default):,}"
    if isinstance(default, int) and not isinstance(default, bool) and default >= 1000:
        return f"{default:,}"
    return str(default)


def settings_table(settings_class: type[Settings] = Settings) -> str:
    """The settings table of docs/settings.md, from the declarations above."""
    rows = ["| variable | default | read | resource field | meaning |", "|---|---|---|---|---|"]
    for d in declarations(settings_class):
        field = f"`{d.resource}.{d.resource_field}`" if d.resource else ""
        rows.append(f"| `{d.env_var}` | `{_shown_default(d.default)}` | {d.read} | {field} | {d.description} |")
    rows.append(
        "| `DAGSTER_HOME` | `.dagster_home` | load | | The Dagster instance (runs, cursors, schedules); "
        "`ev-awareness init` writes its `dagster.yaml`. |"
    )
    return "\n".join(rows)
