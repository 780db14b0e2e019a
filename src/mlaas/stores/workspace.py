"""Where state lives: everything under one folder, `$MLAAS_HOME` (default `.mlaas/`).

A user deletes the folder to start clean; a test points it at a temporary directory.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from mlaas.core.errors import SettingsError
from mlaas.core.settings import PIPELINE_NAME_PATTERN

DEFAULT_HOME = ".mlaas"
TRACKING_URI_VARIABLE = "MLAAS_TRACKING_URI"
LOCK_URI_VARIABLE = "MLAAS_LOCK_URI"
SQLITE_PREFIX = "sqlite:///"
# The stores MLflow serves runs and registry from: a SQLite file (one machine), a PostgreSQL
# database, or an MLflow tracking server (team mode).
TRACKING_SCHEMES = ("sqlite", "postgresql", "http", "https")
MIN_FREE_MB_VARIABLE = "MLAAS_MIN_FREE_MB"
# Enough for the shipped data sets, a few model versions and their Bentos.
DEFAULT_MIN_FREE_MB = 500.0


@dataclass(frozen=True)
class PipelinePaths:
    """The files one pipeline's stages read and write (the same paths `dvc.yaml` names)."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "dataset.parquet"

    @property
    def dataset_info(self) -> Path:
        return self.root / "data" / "dataset.json"

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    @property
    def validation_result(self) -> Path:
        return self.validation_dir / "result.json"

    @property
    def reference_profile(self) -> Path:
        # Outside validation/: DVC empties a stage's outputs before it runs, and this must stay.
        return self.root / "reference" / "profile.json"

    @property
    def validation_summary(self) -> Path:
        return self.validation_dir / "summary.json"

    @property
    def predictions_dir(self) -> Path:
        """What the pipeline's model servers answered (`stores.prediction_log`)."""
        return self.root / "predictions"

    @property
    def feedback_dir(self) -> Path:
        """The true outcomes clients sent for those answers (`POST /feedback`)."""
        return self.root / "feedback"

    @property
    def monitoring_dir(self) -> Path:
        """The `monitor` flow's reports, records and the feedback rows it retrains on."""
        return self.root / "monitoring"

    @property
    def drift_record(self) -> Path:
        """The last check (`mlaas.core.monitoring.MonitorCheck`)."""
        return self.monitoring_dir / "drift.json"

    @property
    def monitoring_history(self) -> Path:
        """Every check, one JSON line each."""
        return self.monitoring_dir / "history.jsonl"

    @property
    def splits_dir(self) -> Path:
        return self.root / "data" / "splits"

    @property
    def splits_record(self) -> Path:
        return self.splits_dir / "splits.json"

    def split(self, name: str) -> Path:
        return self.splits_dir / f"{name}.parquet"

    @property
    def tune_dir(self) -> Path:
        """The hyperparameter search's: its record, its study journal, its trials' scratch."""
        return self.root / "tune"

    @property
    def search_record(self) -> Path:
        return self.tune_dir / "search.json"

    @property
    def trials_dir(self) -> Path:
        return self.tune_dir / "trials"

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def checkpoints_dir(self) -> Path:
        return self.train_dir / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.train_dir / "model"

    @property
    def training_result(self) -> Path:
        return self.train_dir / "training.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.evaluation_dir / "metrics.json"

    @property
    def evaluation_record(self) -> Path:
        return self.evaluation_dir / "evaluation.json"

    @property
    def registration(self) -> Path:
        return self.root / "registry" / "registration.json"

    @property
    def promotion(self) -> Path:
        return self.root / "registry" / "promotion.json"

    @property
    def manifest(self) -> Path:
        return self.root / "registry" / "manifest.json"

    @property
    def package_result(self) -> Path:
        return self.root / "package" / "package.json"


@dataclass(frozen=True)
class Workspace:
    """The state folder and the locations each service keeps inside it."""

    home: Path
    store_uri: str | None = None
    """MLflow's tracking and registry store, where it is not the SQLite file under `home`.
    Checked by `ensure_writable` and before any client is made, not here: the CLI builds the
    workspace before it can explain errors."""
    lock_uri: str | None = None
    """The PostgreSQL database whose advisory locks guard the registry where several machines
    share it (team mode: `mlaas.stores.locks.store_lock`); None: this machine's file locks."""

    @classmethod
    def from_env(cls, home: Path | str | None = None) -> Workspace:
        """The folder `home`, else `$MLAAS_HOME`, else `.mlaas` in the current folder; the
        tracking store `$MLAAS_TRACKING_URI`, else the SQLite file in that folder; the registry's
        shared locks in `$MLAAS_LOCK_URI` (team mode)."""
        chosen = Path(home or os.environ.get("MLAAS_HOME") or DEFAULT_HOME).expanduser()
        return cls(
            chosen.resolve(),
            os.environ.get(TRACKING_URI_VARIABLE) or None,
            os.environ.get(LOCK_URI_VARIABLE) or None,
        )

    @property
    def tracking_uri(self) -> str:
        return self.store_uri or f"{SQLITE_PREFIX}{self.home / 'mlflow.db'}"

    @property
    def tracking_db(self) -> Path | None:
        """The SQLite database of MLflow's runs and registry; None for a store that is not a
        SQLite file (a PostgreSQL database, a tracking server)."""
        uri = self.tracking_uri
        if not is_sqlite(uri):
            return None
        return Path(unquote(uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0]))

    @property
    def tracking_location(self) -> str:
        """The tracking URI as shown in messages: without the password it may hold."""
        return redacted(self.tracking_uri)

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow-artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def prefect_results(self) -> Path:
        return self.prefect_home / "results"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def datasets_dir(self) -> Path:
        """Uploaded data sets, each stored once by its content hash (`POST /datasets`)."""
        return self.home / "datasets"

    @property
    def catalog_dir(self) -> Path:
        """The platform's pipelines: the params file each one runs (`mlaas up`, the API)."""
        return self.home / "catalog"

    def metrics_dir(self, host: str, port: int) -> Path:
        """Prometheus's folder of the server on host:port. BentoML empties it when a server
        starts and /metrics sums every file in it: shared, each server would show (and wipe)
        the others' counts. One folder per address, emptied again when the address is reused."""
        return self.bentoml_home / "prometheus" / re.sub(r"[^0-9A-Za-z.]", "_", f"{host}_{port}")

    def pipeline(self, name: str) -> PipelinePaths:
        # Settings already restrict the name; checked again here because a name from anywhere
        # else (a CLI argument) must not build a path outside the workspace either.
        if not re.match(PIPELINE_NAME_PATTERN, name):
            raise SettingsError(
                f"pipeline name {name!r}: use 1 to 63 lower-case letters, digits, _ or - "
                "(it names a folder under $MLAAS_HOME/pipelines/)"
            )
        return PipelinePaths(self.home / "pipelines" / name)

    def environment(self) -> dict[str, str]:
        """Variables that point Prefect, MLflow, BentoML and GX at this workspace.

        They are read by those libraries when first imported, so the entry points (CLI, tests)
        apply them before importing anything else: nothing lands in the user's home by accident.
        """
        return {
            "MLAAS_HOME": str(self.home),
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect_results),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Prefect's 20 s default is too short for its local API to start on a busy 2-core box.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
            # Empty for the default store: a child process builds the same workspace again.
            TRACKING_URI_VARIABLE: self.store_uri or "",
            LOCK_URI_VARIABLE: self.lock_uri or "",
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "true",
            "GX_ANALYTICS_ENABLED": "false",
            # Pretrained weights come from installed packages; never reach for a model hub.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
        }

    def ensure_writable(self, min_free_mb: float | None = None) -> None:
        """Create the state folder, or explain why it cannot be used, before any work starts:
        it must be writable and its disk must have `min_free_mb` free (default:
        $MLAAS_MIN_FREE_MB, else 500). A tracking URI mlaas cannot use is refused first."""
        check_tracking_uri(self.tracking_uri)
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            # Named per process: runs started together in one home each write and remove their
            # own (a shared name let one remove another's, and that run failed with ENOENT).
            probe = self.home / f".write-probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise self.explain(error) from None
        needed = min_free_mb if min_free_mb is not None else min_free_mb_from_env()
        free = free_mb(self.home)
        if free < needed:
            raise SettingsError(
                f"only {free:.0f} MB free on the disk of MLAAS_HOME={self.home}, and a run needs "
                f"at least {needed:.0f} MB: free some space, point MLAAS_HOME at a larger disk, "
                f"or lower {MIN_FREE_MB_VARIABLE}"
            )

    def explain(self, error: OSError) -> SettingsError:
        """An OS error met writing state, as a message that says what to do about it."""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return SettingsError(
                f"the disk of MLAAS_HOME={self.home} is full ({error.strerror}"
                f"{': ' + str(error.filename) if error.filename else ''}); "
                "free some space or point MLAAS_HOME at a larger disk, then run again"
            )
        return SettingsError(
            f"cannot write to MLAAS_HOME={self.home} ({error.strerror}); "
            "point MLAAS_HOME at a writable folder"
        )


def is_sqlite(uri: str) -> bool:
    return uri.startswith(SQLITE_PREFIX)


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI that names no store mlaas can use, before anything is written."""
    parts = urlsplit(uri)
    # postgresql+psycopg2:// names SQLAlchemy's driver too; the database is the same.
    scheme = parts.scheme.split("+", 1)[0]
    if is_sqlite(uri):
        well_formed = bool(parts.path.lstrip("/"))
    else:
        well_formed = scheme in TRACKING_SCHEMES and scheme != "sqlite" and bool(parts.netloc)
    if not well_formed:
        raise SettingsError(
            f"{TRACKING_URI_VARIABLE}={redacted(uri)!r} is not a tracking store mlaas can use: "
            "give sqlite:////absolute/path/mlflow.db, postgresql://user@host/database or "
            "http(s)://host:port (an MLflow server), or unset it to use the SQLite file under "
            "MLAAS_HOME"
        )


def redacted(uri: str) -> str:
    """`uri` with the password of its user part replaced, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def min_free_mb_from_env() -> float:
    raw = os.environ.get(MIN_FREE_MB_VARIABLE, "")
    if not raw:
        return DEFAULT_MIN_FREE_MB
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise SettingsError(f"{MIN_FREE_MB_VARIABLE}={raw!r}: give a number of megabytes (>= 0)")
    return value


def free_mb(folder: Path) -> float:
    """Megabytes an unprivileged process may still write on the disk holding `folder`."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize / 2**20


def apply_environment(workspace: Workspace) -> None:
    """Export the workspace's variables into this process (called once, at an entry point)."""
    os.environ.update(workspace.environment())


def apply_missing_environment(workspace: Workspace) -> None:
    """Export those of the workspace's variables this process lacks. A run that a Prefect worker
    on another machine started may know only `$MLAAS_HOME` (and the team's URLs): BentoML and
    GX read their homes when first imported, which is later, in the stages. A variable already
    set is left as it is (the CLI, a test session and `mlaas up` set them all)."""
    for variable, value in workspace.environment().items():
        os.environ.setdefault(variable, value)
