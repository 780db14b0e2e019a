"""Stage `train`: fit the family's model as one resumable attempt, tracked as one MLflow run.

The fit itself is `mlaas.modeling.fitting`: networks in a process of their own
(`mlaas.modeling.train_worker`), so a trainer killed from outside (the out-of-memory killer, a
preempted machine) fails the stage with `TrainingInterrupted` instead of taking the flow down
with it; scikit-learn models in this process. Every epoch leaves a checkpoint that belongs to
one attempt, keyed by what is trained; training again with the same key resumes from it, into
the same MLflow run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path

from pydantic import BaseModel

from mlaas.core.lineage import Lineage, directory_hash
from mlaas.core.model_card import ModelCard
from mlaas.core.records import NO_SEARCH, SearchResult, SplitInfo, TrainingResult
from mlaas.core.settings import TrainSettings
from mlaas.core.trial_settings import trained_settings
from mlaas.modeling.checkpoints import LAST_CHECKPOINT, completed_epochs
from mlaas.modeling.fitting import (
    FitRequest,
    fit_and_save,
    fit_in_training_process,
    trains_in_own_process,
)
from mlaas.modeling.models import load_model
from mlaas.modeling.reference import build_reference, save_reference
from mlaas.stages.context import StageContext
from mlaas.stages.train_run import start_training_run
from mlaas.stores.files import read_json, read_table, write_json
from mlaas.stores.tracking import Tracker


class Attempt(BaseModel):
    """One training of one key (what is trained), from its first epoch to its saved model."""

    key: str
    run_id: str


def attempt_key(card: ModelCard, cfg: TrainSettings, splits: SplitInfo, lineage: Lineage) -> str:
    """Identifies what is trained: model card, settings, data and code. Same key, same model."""
    content = {
        "card": card.model_dump(mode="json"),
        "train": cfg.what_is_trained(),
        # The test split too: what the model remembers of all the data is part of it.
        "data": [splits.train.content_hash, splits.val.content_hash, splits.test.content_hash],
        "code": lineage.code_version,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _resumable_checkpoint(record: Path, last: Path, key: str) -> tuple[Attempt, int] | None:
    """The earlier attempt at this key and its finished epochs, when one left a checkpoint."""
    if not (record.is_file() and last.is_file()):
        return None
    attempt = Attempt.model_validate(read_json(record, "train"))
    if attempt.key != key:
        return None
    try:
        return attempt, completed_epochs(last)
    except Exception:  # written halfway when the process died: nothing to resume from
        return None


def run(ctx: StageContext, splits: SplitInfo, search: SearchResult = NO_SEARCH) -> TrainingResult:
    """Train the model (with the search's winning settings, after a search) into the run."""
    paths, family, pipeline = ctx.paths, ctx.family, ctx.pipeline
    cfg = trained_settings(ctx.settings, search).train
    workspace, lineage = ctx.workspace, ctx.lineage
    train_table = read_table(splits.train.path, "split")
    card = family.model_card(train_table, ctx.settings.load, cfg.model).model_copy(
        update={"seed": pipeline.seed}
    )
    tracker = Tracker(workspace)
    key = attempt_key(card, cfg, splits, lineage)
    record = paths.train_dir / "attempt.json"
    last = paths.checkpoints_dir / f"{LAST_CHECKPOINT}.ckpt"
    earlier = _resumable_checkpoint(record, last, key)
    if earlier is not None and tracker.reopen(earlier[0].run_id):
        run_id, resumed_from_epoch = earlier[0].run_id, earlier[1]
        # A warning, not info: it reaches stderr with no logging set up (`mlaas stage train`) and
        # past the Prefect console's WARNING threshold, as the line printed before did.
        ctx.log.warning(
            "train: resuming from the checkpoint after epoch %d (MLflow run %s)",
            resumed_from_epoch,
            run_id,
        )
    else:
        # After a search, into the run its trials are nested under.
        searched_in = search.run_id if search.run_id and tracker.reopen(search.run_id) else None
        run_id, resumed_from_epoch = searched_in or start_training_run(ctx, card), None
        shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)
        write_json(Attempt(key=key, run_id=run_id), record)
    fit = (
        functools.partial(fit_in_training_process, started=ctx.trainer)
        if trains_in_own_process(family, card)
        else fit_and_save
    )
    try:
        report = fit(
            FitRequest(
                family=family.name,
                card=card,
                cfg=cfg,
                home=workspace.home,
                store_uri=workspace.store_uri,
                run_id=run_id,
                train_split=splits.train.path,
                val_split=splits.val.path,
                test_split=splits.test.path,
                checkpoints=paths.checkpoints_dir,
                resume_from=last if resumed_from_epoch is not None else None,
                model_dir=paths.model_dir,
            )
        )
        # Before the folder is hashed: the reference is part of the version (`modeling.reference`).
        model = load_model(paths.model_dir)
        test_table = read_table(splits.test.path, "split")
        save_reference(
            build_reference(family, model, train_table, test_table, pipeline.seed),
            paths.model_dir,
        )
        summary = {"epochs": report.epochs, "fit_seconds": report.fit_seconds}
        if report.best_val_loss is not None:
            summary["best_val_loss"] = report.best_val_loss
        tracker.log_metrics(run_id, {**summary, **report.val_metrics})
        result = TrainingResult(
            run_id=run_id,
            model_dir=paths.model_dir,
            model_hash=directory_hash(paths.model_dir),
            epochs=report.epochs,
            best_val_loss=report.best_val_loss,
            fit_seconds=round(report.fit_seconds, 3),
            device=report.device,
            resumed_from_epoch=resumed_from_epoch,
            search=search,
        )
    except BaseException:
        tracker.finish(run_id, succeeded=False)
        raise
    tracker.finish(run_id)
    # The attempt is over: nothing to resume any more, and the model folder is what it made.
    record.unlink()
    shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)
    write_json(result, paths.training_result)
    return result
