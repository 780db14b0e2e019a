"""Registry writes made in order, each with its undo: when one fails, those already made are
taken back, so the registry is as it was and running again starts clean (promotion, rollback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mlaas.stores.registry import store_error
from mlaas.stores.workspace import Workspace


@dataclass(frozen=True)
class Step:
    """One registry write and how to take it back (None: nothing to take back)."""

    write: Callable[[], object]
    undo: Callable[[], object] | None = None


def write_in_order(steps: Sequence[Step], workspace: Workspace, doing: str) -> None:
    """Run the writes in order; when one fails, undo those already done (newest first), so the
    registry is as it was and running again starts clean."""
    done: list[Step] = []
    try:
        for step in steps:
            step.write()
            done.append(step)
    except Exception as error:
        undone = _undo(reversed(done))
        outcome = "nothing was changed" if undone else "undoing its first writes failed too"
        raise store_error(workspace, f"failed while {doing} ({outcome})", error) from error


def _undo(steps: Iterable[Step]) -> bool:
    """Best effort, each step tried: a store that refuses writes may refuse these as well."""
    all_undone = True
    for step in steps:
        if step.undo is None:
            continue
        try:
            step.undo()
        except Exception:
            all_undone = False
    return all_undone
