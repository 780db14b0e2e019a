"""Model families by name: the only place that knows which families exist."""

from mlaas.errors import SettingsError
from mlaas.families.base import Family, ModelCard
from mlaas.families.image import ImageFamily
from mlaas.families.recommendation import RecommendationFamily
from mlaas.families.tabular import TabularFamily
from mlaas.families.text import TextFamily

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


__all__ = ["FAMILIES", "Family", "ModelCard", "get_family"]
