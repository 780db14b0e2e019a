"""The pipeline's work with no orchestration, tracking or packaging: what `mlaas run` would
cost if Prefect, MLflow and BentoML were free. `python -m bench.direct PARAMS` (benchmark 6)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from mlaas.core.settings import load_settings
from mlaas.core.tasks import TASKS
from mlaas.families import get_family
from mlaas.modeling.fitting import fit_model
from mlaas.stages.load import load_table
from mlaas.stages.split import split_table
from mlaas.stages.validate import check_frame


def main(params: Path) -> None:
    settings = load_settings(params)
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-direct-"))
    family = get_family(settings.pipeline.family)
    load = settings.load
    table = load_table(settings.pipeline, load)
    frame = family.validation_frame(table, load)
    passed, _ = check_frame(
        frame, family.expectations(frame, load, settings.validate_, None), "direct", scratch
    )
    if not passed:
        raise RuntimeError(f"{params}: the data set fails its own validation; fix it first")
    task = TASKS[family.task(load)]
    target = family.target_column(load) if task.stratify else None
    splits = split_table(table, target, settings.split, settings.pipeline.seed)
    card = family.model_card(splits.train, load, settings.train.model).model_copy(
        update={"seed": settings.pipeline.seed}
    )
    model, _ = fit_model(family, card, splits.train, splits.val, settings.train, scratch / "ckpt")
    outputs = model.predict(family.features(splits.test, card))
    targets = task.encode_targets(splits.test.column(card.target).to_numpy(False), card)
    print(task.evaluate(targets, outputs, card))
    model.save(scratch / "model")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
