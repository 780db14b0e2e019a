"""Model families by name: the only place that knows which families exist."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlaas.errors import SettingsError
from mlaas.families.base import Family, ModelCard, shipped_source, unsupported_model
from mlaas.families.image import ImageFamily
from mlaas.families.recommendation import RecommendationFamily
from mlaas.families.tabular import TabularFamily
from mlaas.families.text import TextFamily

if TYPE_CHECKING:
    from mlaas.settings import Settings

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (ImageFamily(), TabularFamily(), TextFamily(), RecommendationFamily())
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise SettingsError(
            f"pipeline.family: unknown family {name!r}; choose one of {sorted(FAMILIES)}"
        )
    return FAMILIES[name]


def check_settings(settings: Settings) -> None:
    """Refuse, before any work, a family, data source, path or model that cannot run."""
    family = get_family(settings.pipeline.family)
    load, model = settings.load, settings.train.model
    if model.name not in family.models:
        raise unsupported_model(family, model)
    shipped_source(dict.fromkeys(family.sources), load, family.name, "your own data")
    if load.path is not None and not Path(load.path).expanduser().exists():
        raise SettingsError(
            f"load.path: {load.path} does not exist (relative paths start at {Path.cwd()})"
        )


__all__ = ["FAMILIES", "Family", "ModelCard", "check_settings", "get_family"]
