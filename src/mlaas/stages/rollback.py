"""`mlaas rollback`: move `champion` back to the version that held it before the current one.

The move is made under the model's registry lock and undone whole if one of its writes fails
(`stages.ordered_writes`); the champion history it shortens is the one promotion extends.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mlaas.core.errors import NotReady, SettingsError
from mlaas.stages.ordered_writes import Step, write_in_order
from mlaas.stages.promote import champion_history
from mlaas.stores.locks import registry_lock
from mlaas.stores.registry import CHAMPION, Registry, describe_store
from mlaas.stores.workspace import Workspace

# A version tag: when the version was rolled back from champion (a later rollback skips it).
ROLLED_BACK_TAG = "mlaas.rolled_back"


@dataclass(frozen=True)
class RolledBack:
    name: str
    from_version: int
    to_version: int


def previous_champion(
    history: Sequence[int], current: int, excluded: Collection[int]
) -> int | None:
    """The version that held `champion` before `current` (the latest one before it in the
    history, or the latest of all if `current` was made champion by hand), skipping `excluded`."""
    earlier = list(history[: history.index(current)]) if current in history else list(history)
    return next((v for v in reversed(earlier) if v not in excluded and v != current), None)


def rollback(name: str, workspace: Workspace) -> RolledBack:
    """Move `champion` back to the version that held it before the current one, and mark the
    current one as rolled back: a later rollback skips it, and it is never decided again (a new
    run still competes with the restored champion as usual)."""
    registry = Registry(workspace)
    with registry_lock(workspace, name):
        if not registry.has_model(name):
            raise SettingsError(
                f"no registered model {name!r} in the {describe_store(workspace)}: give the "
                "pipeline name of a model that has been trained (`mlaas run` registers it)"
            )
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
        now = datetime.now(UTC).isoformat(timespec="seconds")
        kept = history[: history.index(target) + 1]
        write_in_order(
            [
                Step(
                    lambda: registry.set_version_tags(name, current, {ROLLED_BACK_TAG: now}),
                    lambda: registry.delete_version_tag(name, current, ROLLED_BACK_TAG),
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
    return RolledBack(name=name, from_version=current, to_version=target)
