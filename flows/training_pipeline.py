"""The Prefect flow `training_pipeline`: every stage as a task, in order, cached by content.

The user-facing place for flows (`make run`, `mlaas run`, a Prefect deployment point here); the
flow itself, its tasks and their cache policies are `mlaas.orchestration.flow`.
"""

from __future__ import annotations

from mlaas.orchestration.flow import (
    DEFAULT_PARAMS,
    serve_command,
    training_pipeline,
)
from mlaas.orchestration.gate_summary import (
    gate_summary_key,
    gate_summary_rows,
    publish_gate_summary,
)

__all__ = [
    "DEFAULT_PARAMS",
    "gate_summary_key",
    "gate_summary_rows",
    "publish_gate_summary",
    "serve_command",
    "training_pipeline",
]

if __name__ == "__main__":
    training_pipeline()
