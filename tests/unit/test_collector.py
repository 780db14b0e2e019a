"""A model server's collector after start-up: what start-up made is frozen, collections spaced."""

from __future__ import annotations

import subprocess
import sys

from mlaas.serving.collector import YOUNG_GENERATION_THRESHOLD


def test_settling_freezes_what_start_up_made_and_spaces_young_collections() -> None:
    # In a process of its own: the test session's collector stays as it is.
    code = (
        "import gc, json; from mlaas.serving.collector import settle_after_start; "
        "before = gc.get_freeze_count(); settle_after_start(); "
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()[0]]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, frozen, young = map(int, done.stdout.strip().strip("[]").split(","))
    assert before == 0 and frozen > 1_000  # the interpreter's objects, at least
    assert young == YOUNG_GENERATION_THRESHOLD
