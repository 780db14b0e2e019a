"""Promotion compares like with like: when the data changed, the champion is scored on the
candidate's test split, so a challenger cannot win only because its split is easier."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.conftest import shrink

from mlaas.core.records import Decision, Evaluation, Promotion, SplitInfo
from mlaas.core.settings import Settings
from mlaas.modeling.models import load_model
from mlaas.stages import promote
from mlaas.stages.table import run_stage
from mlaas.stores.files import read_json, read_table
from mlaas.stores.registry import CHALLENGER, CHAMPION, Registry
from mlaas.stores.workspace import Workspace

NAME = "like-with-like"
UP_TO_PROMOTION = ("load", "validate", "split", "train", "evaluate", "register", "promote")
LOGISTIC = {"name": "logistic_regression"}
# One split on one feature: right on the easy rows, much worse than a line on the hard ones.
STUMP = {"name": "gradient_boosting", "max_iter": 1, "learning_rate": 1.0, "max_leaf_nodes": 2}


def _hard_rows(rows: int, seed: int) -> pd.DataFrame:
    """Two features whose noisy sum decides the label: a line gets about 87% right."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    label = np.where(x.sum(axis=1) + rng.normal(scale=0.6, size=rows) > 0, "yes", "no")
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": label})


def _easy_rows(rows: int, seed: int) -> pd.DataFrame:
    """Rows in two tight clumps well away from the boundary, which any model gets right (what a
    flood of trivial production feedback looks like); inside A's ranges, for the gate."""
    rng = np.random.default_rng(seed)
    side = rng.choice([-1.0, 1.0], size=rows)
    x = np.clip(2.5 * side[:, None] + rng.normal(scale=0.3, size=(rows, 2)), -3.0, 3.0)
    label = np.where(side > 0, "yes", "no")
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": label})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data set A (hard rows) as a CSV, and many easy labelled rows to add to it."""
    folder = tmp_path_factory.mktemp("like-with-like-data")
    original = folder / "original.csv"
    _hard_rows(2000, seed=0).to_csv(original, index=False)
    easy = folder / "easy.parquet"
    _easy_rows(8000, seed=1).to_parquet(easy, index=False)
    return {"original": original, "easy": easy}


def _settings(
    project_settings: Settings, data: Path, model: dict[str, Any], **load: Any
) -> Settings:
    return shrink(
        project_settings,
        NAME,
        pipeline={"family": "tabular"},
        load={"source": None, "path": str(data), "target": "label", **load},
        train={"model": model},
    )


def _promoted(settings: Settings, workspace: Workspace) -> Promotion:
    """Run every stage up to promotion; the promotion it ends with."""
    for stage in UP_TO_PROMOTION:
        result = run_stage(stage, settings, workspace)
    assert isinstance(result, Promotion)
    return result


def _own_accuracy(registry: Registry) -> float:
    """The champion's test accuracy as its own run recorded it."""
    champion = registry.champion(NAME)
    assert champion is not None
    return registry.run_metrics(champion.run_id)["test_accuracy"]


def _accuracy_of(registry: Registry, version: int, split: Path, scratch: Path) -> float:
    """Version `version`'s accuracy on the rows in `split`, computed here, apart from promotion."""
    ref = registry.version_with_alias(NAME, CHAMPION)
    assert ref is not None and ref.version == version
    model = load_model(registry.download_model_dir(ref, scratch / "champion"))
    frame = read_table(split, "split").to_pandas()
    predicted = model.predict(frame[["x1", "x2"]]).argmax(axis=1)
    labels = np.asarray(model.card.labels, dtype=object)[predicted]
    return float(np.mean(labels == frame["label"].to_numpy()))


@dataclass(frozen=True)
class EasierSplit:
    """A champion trained on A, then a weaker challenger trained on A plus many easy rows."""

    workspace: Workspace
    decision: Decision
    evaluation: Evaluation
    splits: SplitInfo


@pytest.fixture(scope="module")
def easier_split(
    project_settings: Settings,
    data: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> EasierSplit:
    workspace = Workspace(tmp_path_factory.mktemp("easier-split") / "mlaas-home")
    _promoted(_settings(project_settings, data["original"], LOGISTIC), workspace)
    challenger = _settings(project_settings, data["original"], STUMP, extra_rows=data["easy"])
    decision = _promoted(challenger, workspace).decision
    paths = workspace.pipeline(NAME)
    return EasierSplit(
        workspace,
        decision,
        Evaluation.model_validate(read_json(paths.evaluation_record, "evaluate")),
        SplitInfo.model_validate(read_json(paths.splits_record, "split")),
    )


@pytest.mark.slow
def test_a_challenger_whose_own_split_is_easier_is_not_promoted(
    easier_split: EasierSplit, tmp_path: Path
) -> None:
    decision, evaluation = easier_split.decision, easier_split.evaluation
    registry = Registry(easier_split.workspace)
    champion_own = _own_accuracy(registry)

    # On their own splits the challenger looks far better: today's rule would promote it.
    assert decision.candidate_value == evaluation.metrics["test_accuracy"]
    assert decision.candidate_value > champion_own
    # On the challenger's split the champion is not worse, so it stays champion.
    assert not decision.promoted
    assert registry.aliases(NAME) == {CHAMPION: 1, CHALLENGER: 2}
    assert decision.champion_value == pytest.approx(
        _accuracy_of(registry, 1, easier_split.splits.test.path, tmp_path)
    )
    assert decision.champion_value is not None
    assert decision.champion_value >= decision.candidate_value
    assert decision.champion_own_value == champion_own


@pytest.mark.slow
def test_the_decision_records_both_figures_on_the_same_split_with_intervals(
    easier_split: EasierSplit,
) -> None:
    decision, evaluation, splits = (
        easier_split.decision,
        easier_split.evaluation,
        easier_split.splits,
    )
    registry = Registry(easier_split.workspace)

    assert decision.compared_on == "the candidate's test split"
    assert decision.compared_on_rows == splits.test.rows == evaluation.test_rows
    assert decision.compared_on_hash == splits.test.content_hash
    assert registry.version_tags(NAME, 2)["mlaas.test_hash"] == splits.test.content_hash
    assert registry.version_tags(NAME, 1)["mlaas.test_hash"] != splits.test.content_hash
    assert (decision.candidate_ci_low, decision.candidate_ci_high) == (
        evaluation.metrics["test_accuracy_ci_low"],
        evaluation.metrics["test_accuracy_ci_high"],
    )
    assert decision.champion_ci_low is not None and decision.champion_ci_high is not None
    assert decision.champion_value is not None and decision.champion_own_value is not None
    assert decision.champion_ci_low <= decision.champion_value <= decision.champion_ci_high
    assert decision.rescoring_failed is None
    reason = decision.reason
    assert reason.startswith(
        f"test_accuracy {decision.candidate_value:.4f} [{decision.candidate_ci_low:.4f}, "
        f"{decision.candidate_ci_high:.4f}] does not beat champion v1's "
        f"{decision.champion_value:.4f} [{decision.champion_ci_low:.4f}, "
        f"{decision.champion_ci_high:.4f}]"
    )
    assert reason.endswith(
        f"on the same test split (v2's, {splits.test.rows:,} rows; "
        f"v1 scored {decision.champion_own_value:.4f} on its own)"
    )
    # What the version's tag and manifest keep is the decision itself.
    assert Decision.model_validate_json(registry.version_tags(NAME, 2)["mlaas.decision"]) == (
        decision
    )
    manifest = read_json(easier_split.workspace.pipeline(NAME).manifest, "promote")
    assert manifest["promotion"]["compared_on_hash"] == splits.test.content_hash
    assert manifest["test_split"]["content_hash"] == splits.test.content_hash


@pytest.mark.slow
def test_a_genuinely_better_challenger_on_changed_data_is_promoted(
    project_settings: Settings, workspace: Workspace, data: dict[str, Path]
) -> None:
    _promoted(_settings(project_settings, data["original"], STUMP), workspace)
    challenger = _settings(project_settings, data["original"], LOGISTIC, extra_rows=data["easy"])
    promotion = _promoted(challenger, workspace)
    decision = promotion.decision

    assert decision.promoted and promotion.champion.version == 2
    assert Registry(workspace).aliases(NAME)[CHAMPION] == 2
    assert decision.compared_on == "the candidate's test split"
    assert decision.champion_value is not None and decision.champion_own_value is not None
    # Measured on the same easier rows, the champion scores higher than on its own; the
    # challenger still beats that figure.
    assert decision.champion_value > decision.champion_own_value
    assert decision.candidate_value > decision.champion_value
    assert " beats champion v1's " in decision.reason
    assert "on the same test split (v2's" in decision.reason


@pytest.mark.slow
def test_unchanged_data_is_compared_as_recorded_without_rescoring(
    project_settings: Settings,
    workspace: Workspace,
    data: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _promoted(_settings(project_settings, data["original"], LOGISTIC), workspace)

    def no_rescoring(*args: object) -> object:
        raise AssertionError("the champion was rescored on an unchanged test split")

    monkeypatch.setattr(promote, "score_champion", no_rescoring)
    decision = _promoted(_settings(project_settings, data["original"], STUMP), workspace).decision
    registry = Registry(workspace)
    champion_own = _own_accuracy(registry)

    assert not decision.promoted
    assert decision.champion_value == champion_own
    assert decision.reason == (
        f"test_accuracy {decision.candidate_value:.4f} does not beat champion v1's "
        f"{champion_own:.4f} by more than 0.0"
    )
    same_split_fields = (
        "compared_on",
        "compared_on_rows",
        "compared_on_hash",
        "candidate_ci_low",
        "candidate_ci_high",
        "champion_ci_low",
        "champion_ci_high",
        "champion_own_value",
        "rescoring_failed",
    )
    assert {field: getattr(decision, field) for field in same_split_fields} == dict.fromkeys(
        same_split_fields
    )


@pytest.mark.slow
def test_a_champion_that_cannot_read_the_new_rows_falls_back_and_says_so(
    project_settings: Settings, workspace: Workspace, data: dict[str, Path]
) -> None:
    _promoted(_settings(project_settings, data["original"], LOGISTIC), workspace)
    # The new data has only x1, and the gate's reference was reset for the new columns (the
    # gate refuses a lost column otherwise): the champion's model needs x2 too.
    workspace.pipeline(NAME).reference_profile.unlink()
    one_feature = _settings(project_settings, data["original"], LOGISTIC, features=["x1"])
    decision = _promoted(one_feature, workspace).decision
    registry = Registry(workspace)
    champion_own = _own_accuracy(registry)

    assert decision.rescoring_failed is not None and "x2" in decision.rescoring_failed
    assert decision.compared_on is None
    assert decision.champion_value == champion_own
    assert decision.reason.startswith(
        f"test_accuracy {decision.candidate_value:.4f} does not beat champion v1's "
        f"{champion_own:.4f} by more than 0.0, each on its own test split: champion v1 could "
        "not be scored on v2's ("
    )


def test_decisions_recorded_before_like_with_like_still_parse() -> None:
    recorded = {
        "promoted": False,
        "alias": CHALLENGER,
        "reason": "test_accuracy 0.8000 does not beat champion v1's 0.9000 by more than 0.0",
        "metric": "test_accuracy",
        "candidate_value": 0.8,
        "champion_version": 1,
        "champion_value": 0.9,
        "min_improvement": 0.0,
    }
    decision = Decision.model_validate_json(json.dumps(recorded))
    assert decision.model_dump(include=set(recorded)) == recorded
    assert decision.compared_on is None and decision.champion_own_value is None
