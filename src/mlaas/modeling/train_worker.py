"""The training process: `python -m mlaas.modeling.train_worker REQUEST.json OUTCOME.json`.

`mlaas.stages.train` starts it for each training, so that a trainer killed from outside (out
of memory, preempted) takes only this process down. It writes its report, or the error that
stopped it, to OUTCOME.json; a user's error keeps its class (one of `mlaas.core.errors`) and
message for the parent to raise again.

With `train.strategy: ddp` this is also each rank's entry point: Lightning launches the other
ranks of this machine by running this same command again (with LOCAL_RANK set), and another
machine's ranks start it themselves (NODE_RANK, MASTER_ADDR, MASTER_PORT: the README's
multi-node steps). Only rank 0 writes OUTCOME.json.

Started before REQUEST.json exists (`training_process.TrainingProcess`, when a run begins), it
imports Lightning and waits for the file; if its parent dies first, it stops waiting.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

from mlaas.core.errors import TrialWasPruned
from mlaas.modeling.fitting import FitOutcome, FitRequest, NotRankZero, fit_and_save
from mlaas.modeling.training_process import PARENT_VARIABLE
from mlaas.stores.files import write_json


def main(request_path: Path, outcome_path: Path) -> int:
    _log_to_stderr()
    request = FitRequest.model_validate_json(_request_when_written(request_path))
    if request.cfg.num_nodes > 1 and _is_first_rank():
        logging.getLogger("mlaas").info(
            "DDP over %d nodes: this is node 0; start each other node with the same MASTER_ADDR "
            "and MASTER_PORT, its NODE_RANK and a copy of %s: `python -m "
            "mlaas.modeling.train_worker REQUEST.json OUTCOME.json`",
            request.cfg.num_nodes,
            request_path,
        )
    try:
        outcome = FitOutcome(report=fit_and_save(request))
    except NotRankZero:
        return 0  # another rank of a DDP training: rank 0 answers for all of them
    except TrialWasPruned as pruned:  # the search's pruner stopped it: an outcome, not a crash
        outcome = FitOutcome.of_error(pruned)
    except Exception as error:
        traceback.print_exc()
        outcome = FitOutcome.of_error(error)
    if _is_first_rank():  # another rank's error is rank 0's too: its collectives fail
        write_json(outcome, outcome_path)
    return 0 if outcome.report is not None else 1


def _request_when_written(request_path: Path) -> str:
    """The request, once the train stage has written it; meanwhile Lightning is imported, which
    every fit of a network needs and which takes seconds."""
    if not request_path.exists():
        import lightning.pytorch  # noqa: F401

        parent = int(os.environ.get(PARENT_VARIABLE, os.getppid()))
        while not request_path.exists():
            if os.getppid() != parent:  # orphaned: the run that started it is gone
                raise SystemExit("mlaas train_worker: the run that started it ended; stopping")
            time.sleep(0.02)
    return request_path.read_text()


def _is_first_rank() -> bool:
    """Rank 0 of a DDP training, as Lightning's launcher and a second node's command set it
    (or the only process of any other training)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _log_to_stderr() -> None:
    """mlaas's INFO lines (one per epoch) to stderr, which this process shares with its parent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S")
    )
    logger = logging.getLogger("mlaas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
