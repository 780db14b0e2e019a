"""The training process, `python -m mlaas.modeling.train_worker REQUEST.json OUTCOME.json`, as a
handle its parent can start before it knows the request.

A fresh interpreter spends seconds importing torch and Lightning before it trains. The flow
starts one when a run begins (`TrainingProcess.start`), so those seconds pass while the run loads,
validates and splits the data; the process then waits for its request file, which the train
stage writes (`fitting.fit_in_training_process`). A process never handed a request (the training
was a cache hit, the gate refused the data) is ended with the run; one whose parent dies stops
waiting by itself. Free of torch: the flow imports it whatever the run does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel

from mlaas.stores.files import write_json

REQUEST_FILE, OUTCOME_FILE = "request.json", "outcome.json"
PARENT_VARIABLE = "MLAAS_TRAINING_PARENT"
"""The PID of the process that started it: once another process is its parent, that one is gone.
(Its own parent PID, read when it starts, may already be the orphan reaper's.)"""


class TrainingProcess:
    """One training process and its scratch folder (request in, outcome out)."""

    def __init__(self, process: subprocess.Popen[bytes], scratch: Path) -> None:
        self.process = process
        self.scratch = scratch
        self.handed = False

    @classmethod
    def start(cls) -> TrainingProcess:
        scratch = Path(tempfile.mkdtemp(prefix="mlaas-train-"))
        # The child imports the very mlaas this process runs, installed or not.
        package_parent = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "mlaas.modeling.train_worker"),
                *(str(scratch / REQUEST_FILE), str(scratch / OUTCOME_FILE)),
            ],
            env={**os.environ, "PYTHONPATH": python_path, PARENT_VARIABLE: str(os.getpid())},
            # A group of its own, with the DDP ranks it launches: ended whole.
            start_new_session=True,
        )
        return cls(process, scratch)

    @property
    def outcome_path(self) -> Path:
        return self.scratch / OUTCOME_FILE

    def waiting(self) -> bool:
        """Whether it still waits for a request (not handed one, not dead)."""
        return not self.handed and self.process.poll() is None

    def run(self, request: BaseModel) -> int:
        """Hand it `request` and wait for it to end: its exit code, negative for a signal.
        Cancelled, interrupted or dead, neither it nor a rank it launched runs on after this
        (a rank whose rank 0 died waits in a collective)."""
        self.handed = True
        # Written whole (a temporary file renamed): the process reads it as soon as it exists.
        write_json(request, self.scratch / REQUEST_FILE)
        try:
            return self.process.wait()
        finally:
            self._end_group()

    def close(self) -> None:
        """End it, whatever it was doing, and remove its folder."""
        self._end_group()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _end_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
