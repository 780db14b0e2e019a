"""The champion scored on the candidate's test split, for promotion to compare like with like.

When a retraining learns from changed data (new rows, labelled production records), its test
split holds other rows than the champion's, and a challenger could win only because its rows are
easier. The champion's model is then downloaded from the registry and scored as `evaluate`
scores a model: `load_model`, the family's features, the task's metrics and confidence
intervals, the family's extra metrics. (Those, and torch with them, are imported when a champion
is scored: promotion of a run that changed nothing never does.)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from mlaas.core.records import ModelVersionRef, SplitInfo
from mlaas.core.settings import EvaluateSettings
from mlaas.families import get_family
from mlaas.stores.files import read_table
from mlaas.stores.model_registry import ModelRegistry

TEST_HASH_TAG = "mlaas.test_hash"
"""The version tag holding the content hash of its test split (`register.lineage_tags`)."""


@dataclass(frozen=True)
class Rescored:
    """The champion's metrics on the candidate's test split, or why it could not be scored."""

    metrics: dict[str, float] | None
    failure: str | None = None


def tested_on_same_rows(
    registry: ModelRegistry, champion: ModelVersionRef, splits: SplitInfo
) -> bool:
    """Whether the champion's test split is the candidate's, by content hash; a champion
    registered without the hash is taken to have been tested on other rows."""
    tags = registry.version_tags(champion.name, champion.version)
    return tags.get(TEST_HASH_TAG) == splits.test.content_hash


def score_champion(
    registry: ModelRegistry,
    champion: ModelVersionRef,
    splits: SplitInfo,
    metric: str,
    evaluate_cfg: EvaluateSettings,
) -> Rescored:
    """The champion's test metrics and intervals on `splits.test`, as `evaluate` computes them."""
    test = read_table(splits.test.path, "split")
    try:
        with tempfile.TemporaryDirectory(prefix="mlaas-champion-") as scratch:
            model_dir = registry.download_model_dir(champion, Path(scratch) / "model")
            metrics = _measure(model_dir, splits, test, metric, evaluate_cfg)
    # Broad on purpose: whatever stops the old model from answering the new rows (a feature
    # column it needs is gone, a label it never saw, a model file it cannot load) means the
    # same here, that the comparison falls back to each version's own figure, and says why.
    except Exception as error:
        return Rescored(None, f"{type(error).__name__}: {error}")
    if metric not in metrics:
        return Rescored(None, f"its model does not measure {metric} on a test split")
    return Rescored(metrics)


def _measure(
    model_dir: Path, splits: SplitInfo, test: pa.Table, metric: str, cfg: EvaluateSettings
) -> dict[str, float]:
    from mlaas.modeling.models import load_model
    from mlaas.stages.evaluate import scored

    model = load_model(model_dir)
    family = get_family(model.card.family)
    _, _, metrics = scored(model, family, test)
    if metric not in metrics:
        # Ranking metrics of recommenders come from the family (they need the training rows).
        metrics |= family.extra_metrics(model, read_table(splits.train.path, "split"), test, cfg)
    return metrics
