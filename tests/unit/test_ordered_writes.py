"""Registry writes in order, with undo: a failed write takes back the ones made before it."""

from __future__ import annotations

import pytest

from mlaas.core.errors import TrackingStoreUnavailable
from mlaas.stages.ordered_writes import Step, write_in_order
from mlaas.stores.workspace import Workspace


def _fail() -> None:
    raise RuntimeError("store refused the write")


def test_all_writes_made_in_order_are_kept(workspace: Workspace) -> None:
    done: list[str] = []
    write_in_order(
        [Step(lambda: done.append("a"), lambda: done.remove("a")), Step(lambda: done.append("b"))],
        workspace,
        "writing",
    )
    assert done == ["a", "b"]


def test_a_failed_write_undoes_the_earlier_ones_newest_first(workspace: Workspace) -> None:
    log: list[str] = []
    steps = [
        Step(lambda: log.append("write a"), lambda: log.append("undo a")),
        Step(lambda: log.append("write b"), lambda: log.append("undo b")),
        Step(_fail, lambda: log.append("undo c")),
    ]
    with pytest.raises(TrackingStoreUnavailable, match="nothing was changed"):
        write_in_order(steps, workspace, "promoting m v2")
    assert log == ["write a", "write b", "undo b", "undo a"]


def test_an_undo_that_fails_too_is_reported(workspace: Workspace) -> None:
    steps = [Step(lambda: None, _fail), Step(_fail)]
    with pytest.raises(TrackingStoreUnavailable, match="undoing its first writes failed too"):
        write_in_order(steps, workspace, "rolling back m")
