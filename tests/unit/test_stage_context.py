"""The StageContext the drivers build, and the flow's cache keys read from it: a task's key is
the params sections its stage reads, not the whole context it is handed."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mlaas.core.lineage import Lineage
from mlaas.core.settings import Settings
from mlaas.stages.context import StageContext
from mlaas.stores.workspace import Workspace

LINEAGE = Lineage(
    git_commit="abc",
    code_version="code",
    lock_file="constraints.txt",
    lock_hash="lock",
    packages={},
    params={},
)


def _key(stage: str, ctx: object) -> str | None:
    from prefect.context import TaskRunContext

    from mlaas.orchestration.flow import StageSettings

    # The policy reads only the inputs: no task run is needed to compute a key.
    return StageSettings(stage=stage).compute_key(cast(TaskRunContext, None), {"ctx": ctx}, {})


def _with(settings: Settings, section: str, **changes: Any) -> Settings:
    params = settings.as_params()
    params[section].update(changes)
    return Settings.model_validate(params)


def test_the_context_uses_the_lineage_it_is_given_and_finds_the_family_when_asked(
    workspace: Workspace,
) -> None:
    settings = Settings()
    ctx = StageContext(settings, workspace, given_lineage=LINEAGE)
    assert ctx.lineage is LINEAGE
    assert ctx.paths == workspace.pipeline(settings.pipeline.name)
    assert ctx.family.name == settings.pipeline.family
    assert ctx.log.name == "mlaas.stages"


def test_a_section_a_stage_does_not_read_leaves_its_cache_key_as_it_was(
    workspace: Workspace,
) -> None:
    base = Settings()
    other_promotion = _with(base, "promote", min_improvement=0.5)
    for stage in ("validate", "split", "train", "evaluate"):
        assert _key(stage, StageContext(base, workspace)) == _key(
            stage, StageContext(other_promotion, workspace, given_lineage=LINEAGE)
        ), stage
    more_rows = _with(base, "validate", min_rows=base.validate_.min_rows + 1)
    assert _key("validate", StageContext(base, workspace)) != _key(
        "validate", StageContext(more_rows, workspace)
    )
    assert _key("split", StageContext(base, workspace)) == _key(
        "split", StageContext(more_rows, workspace)
    )


def test_trainings_key_ignores_retries_but_evaluations_does_not(workspace: Workspace) -> None:
    base = Settings()
    retried = _with(base, "train", retries=base.train.retries + 1)
    assert _key("train", StageContext(base, workspace)) == _key(
        "train", StageContext(retried, workspace)
    )
    assert _key("evaluate", StageContext(base, workspace)) != _key(
        "evaluate", StageContext(retried, workspace)
    )


def test_a_task_handed_no_context_is_a_mistake() -> None:
    with pytest.raises(TypeError, match="StageContext"):
        _key("split", None)
