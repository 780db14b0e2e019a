"""The base of every `params.yaml` section (the stages' settings and each model's)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every section: unknown keys are typos, so they are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
