"""Moving `champion` by hand: back to the version that held it before (`mlaas rollback`,
`POST /pipelines/NAME/rollback`), or to a version someone names (`POST /pipelines/NAME/promote`).

Each move is made under the model's registry lock and undone whole if one of its writes fails
(`stages.ordered_writes`); the champion history it changes is the one promotion extends. Who
moved it and why are version tags, next to the decision promotion records.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mlaas.core.errors import NotFound, NotReady, SettingsError
from mlaas.stages.ordered_writes import Step, write_in_order
from mlaas.stages.promote import champion_history
from mlaas.stores.locks import registry_lock
from mlaas.stores.registry import CHAMPION, Registry, describe_store
from mlaas.stores.workspace import Workspace

# A version tag: when the version was rolled back from champion (a later rollback skips it).
ROLLED_BACK_TAG = "mlaas.rolled_back"
ROLLED_BACK_BY_TAG = "mlaas.rolled_back_by"
ROLLED_BACK_REASON_TAG = "mlaas.rolled_back_reason"
# Version tags of a version made champion by hand.
PROMOTED_AT_TAG = "mlaas.promoted_by_hand"
PROMOTED_BY_TAG = "mlaas.promoted_by"
PROMOTED_REASON_TAG = "mlaas.promoted_reason"


@dataclass(frozen=True)
class ChampionMove:
    name: str
    from_version: int | None
    to_version: int

    @property
    def moved(self) -> bool:
        return self.from_version != self.to_version


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def previous_champion(
    history: Sequence[int], current: int, excluded: Collection[int]
) -> int | None:
    """The version that held `champion` before `current` (the latest one before it in the
    history, or the latest of all if `current` was made champion by hand), skipping `excluded`."""
    earlier = list(history[: history.index(current)]) if current in history else list(history)
    return next((v for v in reversed(earlier) if v not in excluded and v != current), None)


def _require_model(registry: Registry, name: str, workspace: Workspace) -> None:
    if not registry.has_model(name):
        raise SettingsError(
            f"no registered model {name!r} in the {describe_store(workspace)}: give the "
            "pipeline name of a model that has been trained (`mlaas run` registers it)"
        )


def rollback(
    name: str, workspace: Workspace, who: str | None = None, reason: str | None = None
) -> ChampionMove:
    """Move `champion` back to the version that held it before the current one, and mark the
    current one as rolled back: a later rollback skips it, and it is never decided again (a new
    run still competes with the restored champion as usual)."""
    registry = Registry(workspace)
    with registry_lock(workspace, name):
        _require_model(registry, name, workspace)
        champion = registry.version_with_alias(name, CHAMPION)
        if champion is None:
            raise NotReady(f"model {name!r} has no {CHAMPION!r} yet: nothing to roll back")
        current = champion.version
        existing = registry.versions(name)
        history = champion_history(registry, name)
        rolled_back = [v for v in existing if ROLLED_BACK_TAG in registry.version_tags(name, v)]
        gone = [v for v in history if v not in existing]
        target = previous_champion(history, current, {*rolled_back, *gone})
        if target is None:
            raise NotReady(
                f"model {name!r}: there is no earlier champion to roll back to from "
                f"v{current} (champions so far: {history or 'none recorded'}; "
                f"rolled back: {rolled_back or 'none'})"
            )
        kept = history[: history.index(target) + 1]
        tags = {
            ROLLED_BACK_TAG: _now(),
            **_who_and_why(who, reason, ROLLED_BACK_BY_TAG, ROLLED_BACK_REASON_TAG),
        }
        write_in_order(
            [
                Step(
                    lambda: registry.set_version_tags(name, current, tags),
                    lambda: _delete_tags(registry, name, current, tags),
                ),
                Step(
                    lambda: registry.set_alias(name, CHAMPION, target),
                    lambda: registry.set_alias(name, CHAMPION, current),
                ),
                Step(lambda: registry.set_champion_history(name, kept)),
            ],
            workspace,
            f"rolling back {name} v{current} to v{target}",
        )
    return ChampionMove(name=name, from_version=current, to_version=target)


def promote_version(
    name: str, version: int, workspace: Workspace, who: str, reason: str | None = None
) -> ChampionMove:
    """Make `version` the champion whatever its decision said (a person's call, recorded with
    who and why); the version it replaces stays in the history, so a rollback returns to it.
    Naming the champion itself changes nothing."""
    registry = Registry(workspace)
    with registry_lock(workspace, name):
        _require_model(registry, name, workspace)
        existing = registry.versions(name)
        if version not in existing:
            raise NotFound(
                f"version: model {name!r} has no version {version} (versions: {existing})"
            )
        champion = registry.version_with_alias(name, CHAMPION)
        current = champion.version if champion is not None else None
        if current == version:
            return ChampionMove(name=name, from_version=current, to_version=version)
        history = champion_history(registry, name)
        tags = {
            PROMOTED_AT_TAG: _now(),
            **_who_and_why(who, reason, PROMOTED_BY_TAG, PROMOTED_REASON_TAG),
        }
        was_rolled_back = registry.version_tags(name, version).get(ROLLED_BACK_TAG)
        steps = [
            Step(
                lambda: registry.set_version_tags(name, version, tags),
                lambda: _delete_tags(registry, name, version, tags),
            ),
            Step(
                lambda: registry.set_alias(name, CHAMPION, version),
                lambda: _give_champion_back(registry, name, current),
            ),
            Step(lambda: registry.set_champion_history(name, [*history, version])),
        ]
        if was_rolled_back is not None:
            # Chosen again by a person: a later rollback may return to it.
            steps.insert(
                1, Step(lambda: registry.delete_version_tag(name, version, ROLLED_BACK_TAG))
            )
        write_in_order(steps, workspace, f"promoting {name} v{version} by hand")
    return ChampionMove(name=name, from_version=current, to_version=version)


def _who_and_why(
    who: str | None, reason: str | None, by_tag: str, reason_tag: str
) -> dict[str, str]:
    """The tags saying who moved the champion and why (those given)."""
    return {tag: value for tag, value in ((by_tag, who), (reason_tag, reason)) if value}


def _delete_tags(registry: Registry, name: str, version: int, tags: dict[str, str]) -> None:
    for key in tags:
        registry.delete_version_tag(name, version, key)


def _give_champion_back(registry: Registry, name: str, holder: int | None) -> None:
    if holder is None:
        registry.delete_alias(name, CHAMPION)
    else:
        registry.set_alias(name, CHAMPION, holder)
