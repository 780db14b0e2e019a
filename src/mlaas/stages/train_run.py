"""The pipeline's training run in MLflow: started by `tune` (its trials nest under it) or by
`train`, which trains the model into it either way."""

from __future__ import annotations

from collections.abc import Mapping

from mlaas.core.model_card import ModelCard
from mlaas.stages.context import StageContext
from mlaas.stores.tracking import Tracker


def start_training_run(
    ctx: StageContext, card: ModelCard, extra_tags: Mapping[str, str] | None = None
) -> str:
    """A new training run of the pipeline, tagged with its model, data and lineage."""
    pipeline, lineage = ctx.pipeline, ctx.lineage
    return Tracker(ctx.workspace).start_run(
        experiment=pipeline.name,
        run_name=f"{pipeline.name}-{card.model.name}",
        tags={
            "mlaas.pipeline": pipeline.name,
            "mlaas.family": ctx.family.name,
            "mlaas.model": card.model.name,
            "mlaas.dataset": card.dataset,
            **lineage.tags(),
            **(extra_tags or {}),
        },
        params=lineage.params,
    )
