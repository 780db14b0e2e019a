"""What a server observes of each answer: the serving contract, the out-of-distribution score,
and the record the prediction log keeps for the monitor.

The contract is what the model learned (`mlaas.core.reference`): a number outside the training
range or a category never seen is named in the answer's `warnings` (`serve.out_of_contract:
warn`), refuses the request (`reject`), or passes silently (`allow`). An answer whose
out-of-distribution score is past the threshold calibrated on the test split carries a warning
too, whatever the setting: the input is valid, only unlike what the model saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlaas.core.reference import (
    OOD_SCORE,
    OOD_WARNING,
    InputSummary,
    MonitorReference,
    Spread,
    Value,
    ood_scores,
)
from mlaas.core.settings import ServeSettings


@dataclass(frozen=True)
class Watch:
    """What a served model is watched against: the learned inputs and the calibrated score."""

    learned: dict[str, Any] = field(default_factory=dict)
    spreads: Mapping[str, Spread] = field(default_factory=dict)
    ood_threshold: float = float("inf")
    warn: bool = True
    """Whether contract warnings go into answers (`serve.out_of_contract` is not `allow`)."""


def watch_of(reference: MonitorReference | None, serve: ServeSettings) -> Watch:
    """The watch of a model with this reference (none for a model trained before references)."""
    warn = serve.out_of_contract != "allow"
    if reference is None:
        return Watch(warn=warn)
    return Watch(
        learned=reference.learned,
        spreads=reference.spreads,
        ood_threshold=reference.ood_threshold(serve.ood_flag_share),
        warn=warn,
    )


@dataclass(frozen=True)
class Observed:
    """One answered instance: what the client gets and what the log keeps."""

    prediction: dict[str, Any]
    features: dict[str, Value]
    warnings: list[str]
    ood_score: float | None
    out_of_distribution: bool
    embedding: list[float] | None = None

    @property
    def out_of_contract(self) -> bool:
        """Whether a field broke the contract (beside any out-of-distribution warning)."""
        return len(self.warnings) > int(self.out_of_distribution)


def observe(
    summary: InputSummary, predictions: Sequence[dict[str, Any]], watch: Watch
) -> list[Observed]:
    """Each prediction with its description, warnings and out-of-distribution score."""
    scores = ood_scores(summary.columns, watch.spreads) if watch.spreads else None
    observed = []
    for index, prediction in enumerate(predictions):
        features = summary.row(index)
        warnings = list(summary.warnings[index]) if watch.warn else []
        score = None if scores is None else round(float(scores[index]), 4)
        far = score is not None and score > watch.ood_threshold
        if score is not None:
            features[OOD_SCORE] = score
        if far:
            warnings.append(
                f"{OOD_WARNING}: score {score:g} is past {watch.ood_threshold:.4g}, which "
                "flags the rarest of the model's own test split; this input is unlike its "
                "training data, so the prediction may be wrong"
            )
        embedding = (
            None if summary.embeddings is None else np.round(summary.embeddings[index], 4).tolist()
        )
        observed.append(Observed(prediction, features, warnings, score, far, embedding))
    return observed
