"""The monitor's reference of a trained model, built beside it and saved in its folder.

Built from the training split (what the model learned: ranges, sets, a vocabulary, and the
description of up to `REFERENCE_ROWS` rows) and the test split (what it answers on data it did
not see: prediction drift's reference, and the out-of-distribution scores that calibrate the
threshold). Saved as `model/reference.json` before the model folder is hashed, so the reference
travels with the version through registration, packaging and hot swaps, and a changed one is
refused like changed weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mlaas.core.reference import (
    REFERENCE_FILE,
    REFERENCE_ROWS,
    MonitorReference,
    ood_scores,
    spreads_of,
    with_predictions,
)
from mlaas.core.tasks import task_of
from mlaas.families.base import Family

if TYPE_CHECKING:
    from mlaas.modeling.models import NetworkModel, PipelineModel


def build_reference(
    family: Family,
    model: NetworkModel | PipelineModel,
    train: pa.Table,
    test: pa.Table,
    seed: int,
) -> MonitorReference:
    card = model.card
    task = task_of(card)
    learned = family.learn_inputs(family.features(train, card), card)
    rows = np.random.default_rng(seed).permutation(len(train))[:REFERENCE_ROWS]
    sample = train.take(pa.array(np.sort(rows)))
    sample_features = family.features(sample, card)
    described = with_predictions(
        family.describe_inputs(sample_features, card, learned),
        task.describe(model.predict(sample_features), card),
        card.task,
    )
    test_features = family.features(test, card)
    test_predictions = task.describe(model.predict(test_features), card)
    tested = with_predictions(
        family.describe_inputs(test_features, card, learned), test_predictions, card.task
    )
    spreads = spreads_of(described.columns, described.kinds)
    return MonitorReference(
        training_rows=len(train),
        learned=learned,
        kinds=described.kinds,
        columns=described.columns,
        embeddings=None if described.embeddings is None else described.embeddings.tolist(),
        test_predictions=[item[task.served_key] for item in test_predictions],
        spreads=spreads,
        # The test split and the training rows together: a 1% quantile of a 100-row test split
        # is its one or two strangest rows, and moves by half a spread from split to split.
        # The score is a distance from training medians, not the model's fit, so the training
        # rows are in-distribution data like the test split (their median is a little nearer).
        test_ood_scores=sorted(
            [
                *ood_scores(tested.columns, spreads).tolist(),
                *ood_scores(described.columns, spreads).tolist(),
            ]
        ),
    )


def save_reference(reference: MonitorReference, model_dir: Path) -> None:
    (model_dir / REFERENCE_FILE).write_text(reference.model_dump_json() + "\n")


def read_reference(model_dir: Path) -> MonitorReference | None:
    """The model's reference; None for a model trained before references were saved."""
    path = model_dir / REFERENCE_FILE
    if not path.is_file():
        return None
    return MonitorReference.model_validate_json(path.read_text())
