"""The layout of a packaged model (a BentoML model folder), shared by `package` and the service.

    model/          card.json and weights.pt, exactly as registered (hash-checked)
    serving.json    name, version, alias, recorded hash, serving settings, metrics, lineage tags
    manifest.json   the version's whole reproducibility record

Kept free of MLflow and BentoML imports so the service starts fast.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mlaas.core.errors import TamperedModel
from mlaas.core.lineage import directory_hash
from mlaas.core.settings import MonitorSettings, ServeSettings

MODEL_SUBDIR = "model"
SERVING_FILE = "serving.json"
MANIFEST_FILE = "manifest.json"


class ServingInfo(BaseModel):
    """What the service reads at start-up besides the model itself."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    alias: str
    model_sha256: str
    serve: ServeSettings
    monitor: MonitorSettings = MonitorSettings()
    metrics: dict[str, float]
    tags: dict[str, str]


def verify_model_dir(model_dir: Path, expected_sha256: str) -> None:
    """Refuse model files whose content differs from what was registered."""
    actual = directory_hash(model_dir)
    if actual != expected_sha256:
        raise TamperedModel(
            f"model files in {model_dir} hash to {actual[:12]}…, but {expected_sha256[:12]}… was "
            "recorded at registration: the artifact was changed or corrupted; retrain or restore it"
        )


def read_serving_info(bundle_dir: Path) -> ServingInfo:
    return ServingInfo.model_validate_json((bundle_dir / SERVING_FILE).read_text())
