"""`python -m mlaas.cli.respawn`: a command that exits is started again, with growing pauses,
until the respawner is told to stop; then the command is stopped too."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlaas.cli.respawn import FIRST_PAUSE_SECONDS, LONGEST_PAUSE_SECONDS, keep_running, pause_after


def test_pauses_double_up_to_a_minute_and_start_short_after_a_long_run() -> None:
    pauses = [FIRST_PAUSE_SECONDS / 2]
    for _ in range(8):
        pauses.append(pause_after(pauses[-1], ran_for=1.0))
    assert pauses[1:4] == [2.0, 4.0, 8.0]
    assert pauses[-1] == LONGEST_PAUSE_SECONDS
    assert pause_after(LONGEST_PAUSE_SECONDS, ran_for=3600.0) == FIRST_PAUSE_SECONDS


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_command_that_exits_is_started_again_until_stopped(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    stop = threading.Event()
    command = ["sh", "-c", f"echo started >> {starts}; exit 3"]
    runner = threading.Thread(target=keep_running, args=(command, stop, 0.05))
    runner.start()
    deadline = time.monotonic() + 60
    while _lines(starts) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert _lines(starts) >= 3


def test_sigterm_stops_the_respawner_and_its_command(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    respawner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlaas.cli.respawn",
            "--",
            "sh",
            "-c",
            f"echo $$ > {child_pid}; exec sleep 300",
        ]
    )
    deadline = time.monotonic() + 60
    while not child_pid.exists() or not child_pid.read_text().strip():
        assert time.monotonic() < deadline and respawner.poll() is None
        time.sleep(0.05)
    pid = int(child_pid.read_text())
    respawner.send_signal(signal.SIGTERM)
    assert respawner.wait(timeout=60) == 0
    try:
        subprocess.run(["kill", "-0", str(pid)], check=True, capture_output=True)
        alive = True
    except subprocess.CalledProcessError:
        alive = False
    assert not alive, "the command outlived its respawner"
