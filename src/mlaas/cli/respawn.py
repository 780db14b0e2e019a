"""Keep one command running: start it again when it exits on its own, until told to stop.

    python -m mlaas.cli.respawn -- prefect worker start --pool mlaas ...

A Prefect worker gives up for good after its server has failed a few polls in a row ("Service
exceeded error threshold"), so a PostgreSQL restart under the team stack would leave it with
no workers. This is `Restart=on-failure` for the one part that needs it, no more: it restarts
after a pause that doubles up to a minute (a command that cannot start is not spun), and on
SIGTERM or SIGINT it passes the signal on and exits once the command has (`mlaas down` signals
the whole process group anyway).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from types import FrameType

FIRST_PAUSE_SECONDS = 2.0
LONGEST_PAUSE_SECONDS = 60.0
# A command that ran this long before it exited was working: the pause starts short again.
RAN_WELL_SECONDS = 60.0


def pause_after(previous: float, ran_for: float, first: float = FIRST_PAUSE_SECONDS) -> float:
    """How long to wait before the next start: short after a long run, doubling otherwise."""
    if ran_for >= RAN_WELL_SECONDS:
        return first
    return min(LONGEST_PAUSE_SECONDS, max(first, previous * 2))


def keep_running(
    command: list[str], stop: threading.Event, first_pause: float = FIRST_PAUSE_SECONDS
) -> None:
    """Run `command` again each time it exits, until `stop` is set (then stop it too)."""
    pause = first_pause / 2
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        while child.poll() is None:
            if stop.wait(min(0.5, first_pause)):
                child.send_signal(signal.SIGTERM)
                child.wait()
                return
        ran_for = time.monotonic() - started
        pause = pause_after(pause, ran_for, first_pause)
        print(
            f"mlaas respawn: {command[0]} exited with {child.returncode} after {ran_for:.0f} s; "
            f"starting it again in {pause:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if stop.wait(pause):
            return


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    if not arguments:
        print("usage: python -m mlaas.cli.respawn -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    stop = threading.Event()

    def stop_on(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)
    keep_running(arguments, stop)
    return 0  # stopped when asked: a success


if __name__ == "__main__":
    sys.exit(main())
