"""Typed settings: `params.yaml` read once, validated, and handed down as sections.

Section name = stage name = module name = `mlaas stage NAME`; each `dvc.yaml` stage lists the
sections it reads, so a change re-runs only what depends on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlaas.errors import SettingsError

PipelineName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class Section(BaseModel):
    """Base of every section: unknown keys are typos, so they are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineSettings(Section):
    name: PipelineName = "mnist"
    """Registered model name, Bento name and folder under `$MLAAS_HOME/pipelines/`."""
    family: str = "image"
    seed: int = Field(42, ge=0)


class LoadSettings(Section):
    source: str = "mnist"
    """A data set the family knows by name (image: `mnist`, `digits`)."""
    max_rows: int | None = Field(None, ge=10)
    """Keep a stratified sample of this many rows (for quick trials); None keeps all."""


class ValidateSettings(Section):
    min_rows: int = Field(100, ge=1)
    min_class_share: float = Field(0.02, ge=0.0, lt=1.0)
    """Every class must hold at least this share of the rows (class balance)."""
    expected_classes: list[int | str] | None = None
    """The label set the data must have; None takes the family's default for the source."""


class SplitSettings(Section):
    test_size: float = Field(0.1, gt=0.0, lt=0.5)
    val_size: float = Field(0.1, gt=0.0, lt=0.5)


class CnnSettings(Section):
    name: Literal["cnn"] = "cnn"
    conv_channels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32], min_length=1, max_length=6
    )
    kernel_size: int = Field(3, ge=1, le=7)
    hidden_units: int = Field(128, ge=1, le=8192)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    augment_max_shift: int = Field(2, ge=0, le=8)
    """Training images are shifted by up to this many pixels (0 turns augmentation off)."""


ModelSettings = Annotated[CnnSettings, Field(discriminator="name")]


class TrainSettings(Section):
    model: ModelSettings = CnnSettings()
    max_epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    early_stopping_patience: int = Field(4, ge=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = "auto"
    deterministic: bool = True


class PromoteSettings(Section):
    metric: str = "test_accuracy"
    higher_is_better: bool = True
    min_improvement: float = Field(0.0, ge=0.0)
    """A new version becomes champion only if it beats the champion by more than this."""


class PackageSettings(Section):
    bentofile: Path = Path("bentofile.yaml")
    build_context: Path = Path("src")
    """Folder whose files the Bento carries (the `mlaas` package lives there)."""


class ServeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65_535)
    max_instances: int = Field(256, ge=1, le=100_000)
    """Largest `instances` list one request may send; more is a 4xx."""
    max_batch_size: int = Field(128, ge=1)
    max_latency_ms: int = Field(50, ge=1)


class Settings(Section):
    pipeline: PipelineSettings = PipelineSettings()
    load: LoadSettings = LoadSettings()
    validate_: ValidateSettings = Field(default_factory=ValidateSettings, alias="validate")
    split: SplitSettings = SplitSettings()
    train: TrainSettings = TrainSettings()
    promote: PromoteSettings = PromoteSettings()
    package: PackageSettings = PackageSettings()
    serve: ServeSettings = ServeSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def as_params(self) -> dict[str, Any]:
        """The settings as `params.yaml` spells them (for logging and the manifest)."""
        return self.model_dump(mode="json", by_alias=True)


def parse_settings(raw: dict[str, Any], source: str = "params") -> Settings:
    """Validate a parsed params mapping, turning pydantic's errors into one readable message."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            problems.append(f"  {where}: {item['msg']}")
        raise SettingsError(
            f"{source} is not valid:\n" + "\n".join(problems) + "\nFix these keys and run again."
        ) from None


def load_settings(path: Path | str) -> Settings:
    """Read and validate a params file (the only place `params.yaml` is read)."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"params file {path} does not exist; pass --params PATH to a YAML file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SettingsError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{path} must hold a mapping of sections, not {type(raw).__name__}")
    return parse_settings(raw, source=str(path))
