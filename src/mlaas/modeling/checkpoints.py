"""Training checkpoints as files: which one a killed attempt resumes from, and how far it got.

Free of Lightning: the train stage reads checkpoints in the flow's process, which fits a
scikit-learn pipeline without ever importing Lightning.
"""

from __future__ import annotations

from pathlib import Path

import torch

LAST_CHECKPOINT = "last"
"""The newest epoch's checkpoint, `last.ckpt`, best or not: what a killed attempt resumes from."""


def completed_epochs(checkpoint: Path) -> int:
    """How many epochs a checkpoint has finished (it stores the 0-based epoch it was saved in)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["epoch"]) + 1
