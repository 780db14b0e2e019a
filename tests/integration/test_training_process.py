"""The training process started ahead of its request (`mlaas.modeling.training_process`): it takes
the request when the train stage writes it, and it never outlives the run that started it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tests.unit.test_errors import _request

from mlaas.core.errors import SettingsError
from mlaas.modeling.fitting import fit_in_training_process
from mlaas.modeling.training_process import TrainingProcess

pytestmark = pytest.mark.slow
# A process that imports torch and Lightning on a busy 2-core machine: generous, never a timing.
GONE_WITHIN_SECONDS = 120


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.5)
    return False


def test_a_process_started_ahead_trains_the_request_written_later(tmp_path: Path) -> None:
    started = TrainingProcess.start()
    assert started.waiting()
    # A request its process refuses at once (an unknown family): the error comes back from the
    # very process started ahead, which read the request file when it appeared.
    request = _request(tmp_path).model_copy(update={"family": "no-such-family"})
    with pytest.raises(SettingsError, match="unknown family 'no-such-family'"):
        fit_in_training_process(request, started=started)
    assert started.handed and started.process.returncode == 1
    assert not started.waiting() and not started.scratch.exists()


def test_a_process_never_handed_a_request_is_ended_with_its_run() -> None:
    started = TrainingProcess.start()
    started.close()
    assert started.process.poll() is not None and not started.scratch.exists()


def test_a_waiting_process_whose_run_died_stops_waiting() -> None:
    parent = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\n"
            "from mlaas.modeling.training_process import TrainingProcess\n"
            "print(TrainingProcess.start().process.pid, flush=True)\n"
            "os._exit(0)\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert _gone(int(parent.stdout.strip())), "an orphaned training process kept waiting"
