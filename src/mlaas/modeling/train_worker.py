"""The training process: `python -m mlaas.modeling.train_worker REQUEST.json OUTCOME.json`.

`mlaas.stages.train` starts it for each training, so that a trainer killed from outside (out
of memory, preempted) takes only this process down. It writes its report, or the error that
stopped it, to OUTCOME.json; a user's error keeps its class (one of `mlaas.core.errors`) and
message for the parent to raise again.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from mlaas.core.errors import TrialWasPruned
from mlaas.modeling.fitting import FitOutcome, FitRequest, fit_and_save
from mlaas.stores.files import write_json


def main(request_path: Path, outcome_path: Path) -> int:
    _log_to_stderr()
    request = FitRequest.model_validate_json(request_path.read_text())
    try:
        outcome = FitOutcome(report=fit_and_save(request))
    except TrialWasPruned as pruned:  # the search's pruner stopped it: an outcome, not a crash
        outcome = FitOutcome.of_error(pruned)
    except Exception as error:
        traceback.print_exc()
        outcome = FitOutcome.of_error(error)
    write_json(outcome, outcome_path)
    return 0 if outcome.report is not None else 1


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
