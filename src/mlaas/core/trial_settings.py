"""A search space read against the chosen model, and a trial's values laid over the settings.

Pure: no Optuna here. `searched_keys` is the start-up check (a name the model does not have, or
a bound its setting does not allow, is a settings error naming `tune.search_space.KEY`), and
`with_trial_values` is how a trial's (or the winner's) values become the settings it trains with.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from mlaas.core.errors import SettingsError
from mlaas.core.model_settings import ModelSection
from mlaas.core.records import SearchResult
from mlaas.core.search_space import TRAINED_KEYS, Choice, Dimension, Range
from mlaas.core.settings import Settings, parse_settings

KEY = "tune.search_space"


@dataclass(frozen=True)
class SearchedKey:
    """One setting a search varies: where it lives, its range or choices, and its type."""

    name: str
    section: Literal["model", "train"]
    """`train.model.NAME` or `train.NAME`."""
    dimension: Dimension
    whole: bool
    """A whole-number setting: its range is sampled as integers."""

    def category(self, choice: Any) -> bool | int | float | str | None:
        """A choice as Optuna stores it: itself when it is a plain value, its JSON otherwise
        (a list of layer widths), which reads the same in the dashboard and in MLflow."""
        if choice is None or isinstance(choice, bool | int | float | str):
            return choice
        return json.dumps(choice)

    def value(self, category: Any) -> Any:
        """The setting's value for a category `category` returned."""
        assert isinstance(self.dimension, Choice)
        for choice in self.dimension.choices:
            if self.category(choice) == category:
                return choice
        raise ValueError(f"{category!r} is none of {KEY}.{self.name}'s choices")


def search_space_of(settings: Settings) -> dict[str, Dimension]:
    """The space as given, else the chosen model's default one."""
    model = settings.train.model
    assert isinstance(model, ModelSection)
    return dict(settings.tune.search_space or type(model).default_search_space)


def searched_keys(settings: Settings) -> list[SearchedKey]:
    """The settings the search varies, each checked against the chosen model; a settings error
    for a name it does not have or a value its setting does not allow."""
    model = settings.train.model
    assert isinstance(model, ModelSection)
    own = {name for name in type(model).model_fields if name != "name"}
    space = search_space_of(settings)
    if settings.tune.trials > 0 and not space:
        raise SettingsError(
            f"{KEY}: empty, and the {model.name} model declares no default space; "
            f"name at least one of its settings: {sorted(own)}"
        )
    keys = []
    for name, dimension in space.items():
        if name in own:
            section: Literal["model", "train"] = "model"
        elif name in TRAINED_KEYS and type(model).trained_by_lightning:
            section = "train"
        else:
            trained = f" or {list(TRAINED_KEYS)}" if type(model).trained_by_lightning else ""
            raise SettingsError(
                f"{KEY}.{name}: the {model.name} model has no setting {name!r}; "
                f"search its settings {sorted(own)}{trained}"
            )
        keys.append(SearchedKey(name, section, dimension, whole=_is_whole(settings, section, name)))
    for key in keys:
        _check_bounds(settings, key)
    return keys


def _is_whole(settings: Settings, section: str, name: str) -> bool:
    holder = settings.train.model if section == "model" else settings.train
    return isinstance(getattr(holder, name), int) and not isinstance(getattr(holder, name), bool)


def _check_bounds(settings: Settings, key: SearchedKey) -> None:
    """Every end of a range and every choice must be a value the setting itself allows."""
    dimension = key.dimension
    if isinstance(dimension, Range):
        ends = [dimension.low, dimension.high]
        if key.whole:
            if not all(float(end).is_integer() for end in ends):
                raise SettingsError(
                    f"{KEY}.{key.name}: a whole-number setting takes a range of whole numbers, "
                    f"not {dimension.low} to {dimension.high}"
                )
            ends = [int(end) for end in ends]
        candidates: list[Any] = ends
    else:
        candidates = dimension.choices
    for candidate in candidates:
        try:
            with_trial_values(settings, [key], {key.name: candidate})
        except SettingsError as error:
            detail = str(error).split("\n")[1].strip() if "\n" in str(error) else str(error)
            raise SettingsError(
                f"{KEY}.{key.name}: {candidate!r} is not a value this setting allows ({detail})"
            ) from None


def with_trial_values(
    settings: Settings, keys: list[SearchedKey], values: dict[str, Any]
) -> Settings:
    """`settings` with a trial's values in place: `train.model.NAME` or `train.NAME`."""
    params = settings.as_params()
    by_name = {key.name: key for key in keys}
    for name, value in values.items():
        if by_name[name].section == "model":
            params["train"]["model"][name] = value
        else:
            params["train"][name] = value
    return parse_settings(params, source="the search's trial settings")


def trained_settings(settings: Settings, search: SearchResult) -> Settings:
    """The settings a model is trained with: a search's winning values laid over the given."""
    if not search.best_values:
        return settings
    return with_trial_values(settings, searched_keys(settings), search.best_values)


def rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Values for a person to read (logs, the manifest): floats to 4 significant figures."""

    def show(value: Any) -> Any:
        if isinstance(value, float) and value != 0 and math.isfinite(value):
            return float(f"{value:.4g}")
        return value

    return {name: show(value) for name, value in values.items()}
