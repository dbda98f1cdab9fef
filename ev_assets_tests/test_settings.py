"""The settings have one declaration (`ev_assets.settings.Settings`): the docs table, the Dagster
resources' fields and the pipeline's plain config all come from it."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import dagster as dg
import pytest

from ev_assets.defs.resources import RESOURCES, PipelineConfig, environment_resources, settings_resource
from ev_assets.pipeline import PipelineSettings
from ev_assets.settings import PIPELINE, RUN, Settings, _setting, declarations, resource_declarations, settings_table
from ev_assets.warehouse.data_dictionary import DOCS

# Read by a step straight from PipelineConfig.resolved(), not part of the steps' shared PipelineSettings.
STEP_LEVEL = {"rejection_rate_warn", "flagged_share_warn", "rebuild_chunk_meters", "load_chunk_days"}
# A valid value other than the default, for the settings where "default + 3" is not one.
CHANGED = {
    "timezone": "UTC",
    "duration_unit": "minutes",
    "duration_unit_verified": True,
    "load_shape": "even",
    "load_shape_idle_ratio": 0.5,
    "power_factor": 0.8,
    "tou_on_peak": "sat,sun 10:00-12:00",
    "base_load_pu_profile": ",".join(["0.5"] * 24),
    "charge_w_tolerance": 1.3,
    "forecast_adoption_scenarios": "base:0.4:1.1",
    "forecast_managed_share": 0.25,
    "forecast_managed_window": "23:00-05:00",
    "forecast_years": 12,
}


@pytest.fixture(autouse=True)
def _no_settings_in_environment(monkeypatch):
    # The comparisons with the declared defaults must not depend on the shell running the tests.
    for d in declarations():
        monkeypatch.delenv(d.env_var, raising=False)


def test_docs_table_lists_exactly_the_declared_variables():
    text = (DOCS / "settings.md").read_text()
    documented = re.findall(r"^\| `(EV_[A-Z0-9_]+)` \|", text, re.M)
    assert documented == [d.env_var for d in declarations()]
    for d in declarations():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{d.env_var}` |"))
        assert d.description in row
        if d.resource:
            assert f"`{d.resource}.{d.resource_field}`" in row


def test_resource_fields_are_the_declared_ones():
    assert set(RESOURCES) == {d.resource for d in declarations() if d.resource}
    for key, resource in RESOURCES.items():
        declared = {d.resource_field for d in resource_declarations(key)}
        own = set(resource.model_fields) - declared
        assert declared <= set(resource.model_fields), key
        assert own <= {"settle_seconds"}, f"{key} has fields no setting declares: {own}"
        for d in resource_declarations(key):
            field = resource.model_fields[d.resource_field]
            assert field.default is None and d.env_var in field.description and d.description in field.description


def test_every_pipeline_setting_reaches_the_steps():
    """Each PipelineConfig field, set to a value other than its default, changes what the steps read
    (PipelineSettings) or is one of the few a step reads straight from the resource."""
    base = PipelineConfig().settings()
    reaching = set()
    for d in resource_declarations(PIPELINE):
        value = CHANGED.get(d.name, d.default + 3 if isinstance(d.default, (int, float)) else None)
        assert value is not None, f"no test value for {d.name}"
        config = PipelineConfig(**{d.resource_field: value})
        assert getattr(config.resolved(), d.name) == value
        if config.settings() != base:
            reaching.add(d.name)
    assert reaching | STEP_LEVEL == {d.name for d in resource_declarations(PIPELINE)}
    assert not reaching & STEP_LEVEL


def test_pipeline_defaults_are_the_declared_ones():
    assert PipelineSettings() == PipelineSettings.from_settings(Settings())
    declared = Settings()
    assert PipelineSettings().max_session == timedelta(hours=declared.max_session_h)
    assert PipelineSettings().bounds.clock_skew == timedelta(seconds=declared.clock_skew_s)


def test_explicit_field_wins_and_is_validated(monkeypatch):
    monkeypatch.setenv("EV_POWER_FACTOR", "0.85")
    assert PipelineConfig().settings().power_factor == 0.85
    assert PipelineConfig(power_factor=0.7).settings().power_factor == 0.7
    with pytest.raises(ValueError, match="power_factor"):
        PipelineConfig(power_factor=1.5).resolved()


def test_a_new_setting_shows_up_in_the_table_and_the_resource():
    class Extended(Settings):
        demo_new_setting: int = _setting(7, "A setting added for this test.", RUN, resource=PIPELINE)

    assert "| `EV_DEMO_NEW_SETTING` | `7` | run | `pipeline_config.demo_new_setting` | A setting added" in (
        settings_table(Extended)
    )
    resource = settings_resource(PIPELINE, Extended)
    assert "demo_new_setting" in resource.model_fields
    assert resource(demo_new_setting=9).resolved().demo_new_setting == 9
    assert resource().resolved().demo_new_setting == 7


def test_secrets_reach_runs_as_env_vars(monkeypatch):
    monkeypatch.setenv("EV_WAREHOUSE_URL", "sqlite:///ignored.sqlite")
    secrets = [d for d in declarations() if d.secret]
    assert [d.name for d in secrets] == ["warehouse_url"]
    resources = environment_resources()
    for d in secrets:
        assert isinstance(getattr(resources[d.resource], d.resource_field), dg.EnvVar)


def test_every_pipeline_settings_field_comes_from_a_setting():
    """With every pipeline setting changed at once, no PipelineSettings field keeps its default: none
    is filled from anywhere but the declaration."""
    values = {
        d.resource_field: CHANGED.get(d.name, d.default + 3 if isinstance(d.default, (int, float)) else None)
        for d in resource_declarations(PIPELINE)
    }
    every = PipelineConfig(**values).settings()
    default = PipelineSettings()
    same = [f.name for f in dataclasses.fields(PipelineSettings) if getattr(every, f.name) == getattr(default, f.name)]
    assert same == []
