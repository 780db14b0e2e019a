"""A model server's watchers (the champion's package record, the registry) poll in a daemon
thread: `start_polling` is that thread, the same for each."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


def start_polling(
    poll: Callable[[], object],
    interval: float,
    stop: threading.Event,
    log: logging.Logger,
    name: str,
    at_once: bool = False,
) -> None:
    """Call `poll` every `interval` seconds (first at once, with `at_once`) until `stop` is
    set; 0 or less: never. A failed poll is logged and polling goes on: a watcher that dies
    would leave the server stale for good."""
    if interval <= 0:
        return
    # BentoML's server logging passes warnings only; what a watcher says is news, not a warning.
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)

    def watch() -> None:
        if at_once:
            _poll_once(poll, log, name)
        while not stop.wait(interval):
            _poll_once(poll, log, name)

    threading.Thread(target=watch, name=name, daemon=True).start()


def _poll_once(poll: Callable[[], object], log: logging.Logger, name: str) -> None:
    try:
        poll()
    except Exception:
        log.exception("%s failed; it keeps polling", name)
