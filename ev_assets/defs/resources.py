"""Dagster resources: the warehouse, the feed's landing folder, the reference folder and the rules.

Their setting fields are not written here: each is generated from the setting `ev_assets.settings.Settings`
declares for it (`resource=` / `resource_field=`), with its type and meaning. Every field left unset is read
from `Settings` when the run starts (the environment of the run worker), so a setting changed between runs
applies to the next one and nothing is fixed when the code location loads. A field set explicitly (tests,
the UI's launchpad) wins over the environment.
"""

from __future__ import annotations

import types
import typing
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from ev_assets.pipeline import PipelineSettings
from ev_assets.settings import FEED, PIPELINE, REFERENCE, WAREHOUSE, Settings, resource_declarations
from ev_assets.warehouse.store import Warehouse


def _config_type(annotation: Any) -> type:
    """The Dagster config type of a setting's type: paths and dates travel as text, a choice
    (`Literal`) as text that `Settings` validates, `X | None` as X (every field is optional)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _config_type(args[0])
    if annotation in (Path, date):
        return str
    return annotation


class SettingsResource(dg.ConfigurableResource):
    """A resource whose fields override settings (see `settings_resource`)."""

    settings_resource: ClassVar[str]
    settings_class: ClassVar[type[Settings]] = Settings

    def resolved(self) -> Settings:
        """The environment's settings with this resource's explicit fields on top (validated as the
        environment is, so a bad value fails with the setting's own message)."""
        set_fields = self.model_dump()
        explicit = {
            d.name: set_fields[d.resource_field]
            for d in resource_declarations(self.settings_resource, self.settings_class)
            if set_fields.get(d.resource_field) is not None
        }
        current = self.settings_class()
        return self.settings_class.model_validate({**current.model_dump(), **explicit}) if explicit else current


def settings_resource(resource: str, settings_class: type[Settings] = Settings) -> type[SettingsResource]:
    """A resource base class with one optional field per setting `settings_class` declares for `resource`."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "settings_resource": resource,
        "settings_class": settings_class,
    }
    for d in resource_declarations(resource, settings_class):
        annotations[d.resource_field] = _config_type(d.annotation) | None
        namespace[d.resource_field] = Field(default=None, description=f"{d.env_var} when unset. {d.description}")
    namespace["__annotations__"] = annotations
    return typing.cast(type[SettingsResource], type(f"{resource}_settings", (SettingsResource,), namespace))


@lru_cache(maxsize=8)
def _warehouse(url: str) -> Warehouse:
    # One engine (and connection pool) per URL and process, however many steps ask for it.
    return Warehouse(url)


class WarehouseResource(settings_resource(WAREHOUSE)):
    """The warehouse every table is written through (EV_WAREHOUSE_URL: any SQLAlchemy URL)."""

    def get(self) -> Warehouse:
        return _warehouse(self.resolved().warehouse_url)


class FeedResource(settings_resource(FEED)):
    """The landing folder the agent feed arrives in, and how the sensor sizes micro-batches."""

    # Files younger than this wait for the next sensor tick (see batching.settled). Not a setting:
    # tests shorten it.
    settle_seconds: float = 2.0

    @property
    def path(self) -> Path:
        return self.resolved().feed_dir

    @property
    def max_files(self) -> int:
        return self.resolved().batch_max_files

    @property
    def max_messages(self) -> int:
        return self.resolved().batch_max_messages

    @property
    def max_bytes(self) -> int:
        return self.resolved().batch_max_bytes


class ReferenceResource(settings_resource(REFERENCE)):
    """The folder of the utility's reference extracts (CSV): meters, service points, premises,
    transformers, feeders, substations."""

    @property
    def path(self) -> Path:
        return self.resolved().reference_dir


class PipelineConfig(settings_resource(PIPELINE)):
    """Rules and planning figures (bounds are assumptions, DOMAIN.md): unset fields come from the
    EV_* environment when the run starts (see docs/settings.md)."""

    def settings(self) -> PipelineSettings:
        return PipelineSettings.from_settings(self.resolved())


RESOURCES: dict[str, type[SettingsResource]] = {
    WAREHOUSE: WarehouseResource,
    FEED: FeedResource,
    REFERENCE: ReferenceResource,
    PIPELINE: PipelineConfig,
}


def environment_resources() -> dict[str, dg.ConfigurableResource]:
    """The code location's resources. The warehouse URL may hold a password: when it is set, it
    reaches runs as an `EnvVar` (resolved in the run worker, never written into run config)."""
    import os

    return {
        key: resource(
            **{
                d.resource_field: dg.EnvVar(d.env_var)
                for d in resource_declarations(key, resource.settings_class)
                if d.secret and os.environ.get(d.env_var)
            }
        )
        for key, resource in RESOURCES.items()
    }
