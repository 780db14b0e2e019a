"""Typed settings: `params.yaml` read once, validated, and handed down as sections.

Section name = stage name = module name = `mlaas stage NAME`; each `dvc.yaml` stage lists the
sections it reads, so a change re-runs only what depends on it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlaas.core.drift import DriftThresholds
from mlaas.core.errors import SettingsError
from mlaas.core.model_settings import CnnSettings, ModelSettings
from mlaas.core.search_space import TuneSettings
from mlaas.core.section import Section

PIPELINE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
PipelineName = Annotated[str, Field(pattern=PIPELINE_NAME_PATTERN)]


class PipelineSettings(Section):
    name: PipelineName = "mnist"
    """Registered model name, Bento name and folder under `$MLAAS_HOME/pipelines/`."""
    family: str = "image"
    seed: int = Field(42, ge=0, le=2**32 - 1)  # NumPy's and torch's seeds are 32-bit


DATASET_ID = r"^[0-9a-f]{16}$"
"""An uploaded data set's id: the first 16 hex digits of its content's SHA-256."""


class LoadSettings(Section):
    """Where the data comes from: a data set the family ships, or the user's own file or folder."""

    source: str | None = "mnist"
    """A shipped data set by name (image: mnist, fashion_mnist, digits; tabular: breast_cancer,
    wine, diabetes; text: rotten_tomatoes, bbc_news; recommendation: movielens_100k)."""
    path: Path | None = None
    """Instead of `source`: a CSV / parquet file (tabular, text, ratings) or a folder of images
    laid out `class_name/*.png`."""
    dataset: str | None = Field(None, pattern=DATASET_ID)
    """Instead of `source` or `path`: a table uploaded to the control API (`POST /datasets`),
    by the id it answered. A run on any machine reads it from the platform's data set store
    (in team mode, the tracking server's artifact store), not from a path on the server."""
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    """The data set's name in the registry (`mlaas.dataset`); defaults to the file's stem."""
    target: str | None = None
    """User data: the column to predict (tabular target, text label, recommendation rating)."""
    task: Literal["classification", "regression"] | None = None
    """User tabular data: what to predict; inferred from the target's type when omitted."""
    features: list[str] | None = None
    """User tabular data: the feature columns; all other columns when omitted."""
    text_column: str | None = None
    """User text data: the column holding the text."""
    user_column: str | None = None
    item_column: str | None = None
    """User ratings data: the user and item id columns (with `target` as the rating)."""
    image_size: list[Annotated[int, Field(ge=4, le=1024)]] | None = Field(
        None, min_length=2, max_length=2
    )
    """User image folders: resize every image to [height, width]; None keeps the first image's."""
    color_mode: Literal["auto", "grey", "rgb"] = "auto"
    """User image folders: convert every image to grey or RGB; auto takes what most images are
    (a tie is RGB). The served model expects the same, and converts encoded images to it."""
    max_text_chars: int = Field(100_000, ge=1)
    """Text: the longest text accepted, in characters, by the gate and by the endpoint."""
    rating_range: list[float] = Field([1.0, 5.0], min_length=2, max_length=2)
    """Recommendation: the allowed [lowest, highest] rating; predictions are clamped to it."""
    max_rows: int | None = Field(None, ge=10)
    """Keep a seeded sample of this many rows (stratified for classes); None keeps all."""
    extra_rows: Path | None = None
    """A parquet file of labelled rows in this family's table layout, added to the data after
    any `max_rows` sampling: the `monitor` flow writes one from production feedback when it
    retrains (under `$MLAAS_HOME/pipelines/NAME/monitoring/`, named by its content hash)."""

    @model_validator(mode="after")
    def _one_place(self) -> LoadSettings:
        if [self.source, self.path, self.dataset].count(None) != 2:
            raise ValueError(
                "set exactly one of `source` (a shipped data set), `path` (your own file) or "
                "`dataset` (an uploaded one)"
            )
        if self.source is not None and self.color_mode != "auto":
            raise ValueError(
                "color_mode is for an image folder (`path`): a shipped data set keeps its own "
                "colours (mnist, fashion_mnist and digits are grey); remove color_mode"
            )
        return self

    @property
    def dataset_name(self) -> str:
        """`source`, `name`, or the file's stem made safe: the name lands in registry tags,
        search filters and report file names, so it keeps to `name`'s characters."""
        if self.source is not None:
            return self.source
        if self.name is not None:
            return self.name
        if self.dataset is not None:
            return self.dataset
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self._user_path.stem).lstrip("_.-")[:63]
        return safe or "dataset"

    @property
    def _user_path(self) -> Path:
        """`path`; a settings error when it is not set (the user's data is read from it)."""
        if self.path is None:
            raise SettingsError(
                "load.path: not set, yet this reads the user's own data: set load.path to the "
                "file or folder, or load.source to a shipped data set"
            )
        return Path(self.path)

    @property
    def data_path(self) -> Path:
        """`path`, with `~` expanded and made absolute (links followed): the file or folder the
        user named, or a settings error naming the key."""
        resolved = self._user_path.expanduser().resolve()
        if not resolved.exists():
            raise SettingsError(
                f"load.path: {self.path} does not exist (relative paths start at {Path.cwd()})"
            )
        return resolved


class ValidateSettings(Section):
    min_rows: int = Field(100, ge=1)
    min_class_share: float = Field(0.02, ge=0.0, lt=1.0)
    """Classification: every class must hold at least this share of the rows (class balance)."""
    expected_classes: list[int | str] | None = None
    """The label set the data must have; None takes the source's own (or the data's)."""
    max_null_share: float = Field(0.05, ge=0.0, le=1.0)
    """Tabular: at most this share of a feature's values may be missing (they are imputed)."""
    max_duplicate_share: float = Field(0.05, ge=0.0, le=1.0)
    """Tabular: at most this share of rows may repeat another row exactly."""
    range_tolerance: float = Field(0.1, ge=0.0)
    """Tabular: numbers may exceed the ranges learned on the first data set by this share of
    their span before the gate fails (drift beyond that is an error)."""


class SplitSettings(Section):
    test_size: float = Field(0.1, gt=0.0, lt=0.5)
    val_size: float = Field(0.1, gt=0.0, lt=0.5)


class TrainSettings(Section):
    model: ModelSettings = CnnSettings()
    # The rest applies to the models Lightning trains (cnn, mlp, transformer, minilm,
    # matrix_factorization); scikit-learn models take their settings from `model`.
    max_epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    """Rows one optimizer step averages over (under DDP, shared out among the ranks)."""
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    early_stopping_patience: int = Field(4, ge=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = "auto"
    """Devices (GPUs; on a CPU, processes) per node; with `strategy: ddp`, one rank each."""
    strategy: Literal["auto", "ddp"] = "auto"
    """`ddp`: Lightning's distributed data parallel, one process per device (gloo on CPUs,
    NCCL on GPUs), each rank training on its share of every epoch's batches; only rank 0 logs to
    MLflow and writes the model. The training process launches the other ranks itself."""
    num_nodes: int = Field(1, ge=1, le=1024)
    """Machines taking part in one DDP training (see the README's multi-node steps)."""
    ddp_timeout_s: float = Field(300.0, ge=10.0, le=24 * 3600)
    """How long a rank waits for the others in one collective before the training fails (a
    peer that died must not hang the rest for gloo's default half hour)."""
    deterministic: bool = True
    retries: int = Field(2, ge=0, le=10)
    """How many times the flow starts training again after its process died (killed by the
    out-of-memory killer, preempted); each retry resumes from the last finished epoch."""

    @model_validator(mode="after")
    def _distributed_needs_ddp(self) -> TrainSettings:
        if self.num_nodes > 1 and self.strategy != "ddp":
            raise ValueError("num_nodes above 1 trains across machines: set strategy: ddp")
        return self

    def single_process(self) -> TrainSettings:
        """These settings on one process (a fit inside the flow, such as cross-validation's:
        DDP re-runs its launching command per rank, which only the training process may be)."""
        return self.model_copy(update={"strategy": "auto", "num_nodes": 1, "devices": 1})

    def what_is_trained(self) -> dict[str, Any]:
        """The settings that shape the trained model: all but how a failed attempt is retried."""
        return self.model_dump(mode="json", exclude={"retries"})


class EvaluateSettings(Section):
    cv_folds: int = Field(0, ge=0, le=20)
    """k-fold cross-validation of the same model and settings on the whole data set (reported
    as cv_* metrics); 0 turns it off."""
    top_k: int = Field(10, ge=1, le=1000)
    """Recommendation: the k of precision@k and recall@k."""


class PromoteSettings(Section):
    metric: str | None = None
    """The test metric that decides; None: the task's (test_accuracy, or test_rmse)."""
    higher_is_better: bool | None = None
    """None: known for the task's metrics (accuracy up, errors down)."""
    min_improvement: float = Field(0.0, ge=0.0)
    """A new version becomes champion only if it beats the champion by more than this."""


class PackageSettings(Section):
    bentofile: Path = Path("bentofile.yaml")
    build_context: Path = Path("src")
    """Folder whose files the Bento carries (the `mlaas` package lives there)."""


MAX_SERVING_WORKERS = 64


class ServeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65_535)
    workers: int = Field(1, ge=1, le=MAX_SERVING_WORKERS)
    """BentoML worker processes answering requests on the one port (`mlaas serve --workers N`
    for one server), each with its own micro-batcher, champion watcher and prediction log file:
    about one per core the model may use (see BENCHMARKS.md's serving_workers row)."""
    max_instances: int = Field(256, ge=1, le=100_000)
    """Largest `instances` list one request may send; more is a 4xx."""
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest request body, in bytes; a bigger one gets 413 before any of it is parsed. 8 MiB
    holds a full batch of 28x28 images (about 1.2 MB as JSON); long texts may need more."""
    max_batch_size: int = Field(128, ge=1)
    """Adaptive batching: the most instances one model call takes. Requests that arrive while
    the model is busy go together as its next call, so batches grow with the load."""
    batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    """How long a batch waits for more requests before it leaves when fewer than
    `max_batch_size` instances wait. 0: no deliberate wait (a lone request is answered at once)."""
    max_queued_instances: int = Field(10_000, ge=1)
    """Instances allowed to wait for the model; past that a request gets 503 (retry later)
    instead of an ever longer queue."""

    @model_validator(mode="after")
    def _a_full_request_fits_the_queue(self) -> ServeSettings:
        if self.max_queued_instances < self.max_instances:
            raise ValueError(
                f"max_queued_instances ({self.max_queued_instances}) must be at least "
                f"max_instances ({self.max_instances}), or the largest allowed request never fits"
            )
        return self

    tracing: bool = False
    """OpenTelemetry spans per request (BentoML's). Off unless you export them somewhere:
    with no collector they cost about 0.9 ms a request and go nowhere."""
    champion_poll_seconds: float = Field(5.0, ge=0.0, le=3600.0)
    """How often the server looks for a newly packaged champion of its pipeline (a scheduled or
    API run, a promotion, a rollback) and swaps it in without a restart; 0 turns it off."""
    registry_poll_seconds: float = Field(10.0, ge=0.0, le=3600.0)
    """How often the server asks the MLflow registry which version its champion alias names
    (one request, no retries): whether it answers is in `GET /model` and /metrics, and the
    server keeps serving either way; 0 turns it off."""
    out_of_contract: Literal["warn", "reject", "allow"] = "warn"
    """An instance outside what the model learned (a number past the training range, a category
    never seen, an out-of-distribution score past its calibrated threshold): `warn` answers it
    with `warnings` naming the field, `reject` refuses the request with a 422 naming them,
    `allow` says nothing."""
    ood_flag_share: float = Field(0.01, gt=0.0, lt=0.5)
    """The out-of-distribution threshold flags this share of the data the model was built on
    (its test split and the training rows its reference keeps): an answer scored past it
    carries a warning (and is counted in /metrics and by the monitor)."""


class MonitorSettings(Section):
    """What each model server records of what it answers, for the `monitor` flow."""

    log_predictions: bool = True
    """Record each answered instance under `$MLAAS_HOME/pipelines/NAME/predictions/`: request
    id, time, model version, latency, the prediction and the features the monitor compares."""
    log_inputs: bool = False
    """Also record the raw instance (the text, the image's pixels). Off by default: tabular
    features are recorded as they are, but texts and images only as summaries (lengths, token
    counts, intensities), so the log holds no one's words or pictures unless you ask."""
    sample_share: float = Field(1.0, ge=0.0, le=1.0)
    """The share of requests recorded (chosen by request id, so a request is wholly in or out)."""
    rotate_bytes: int = Field(8 * 1024**2, ge=4096, le=1024**3)
    """A log file past this size is closed and a new one begun."""
    rotate_seconds: float = Field(3600.0, ge=1.0, le=7 * 24 * 3600)
    """... and one older than this."""
    max_log_bytes: int = Field(256 * 1024**2, ge=64 * 1024, le=1024**4)
    """The pipeline's prediction log is kept under this size: past it the oldest files go."""

    interval_seconds: float = Field(3600.0, ge=1.0, le=366 * 24 * 3600)
    """How often `mlaas up`'s `monitor` deployment checks the pipeline's champion."""
    window_records: int = Field(1000, ge=10, le=1_000_000)
    """A check compares the records answered by the champion since the last check, and at
    least the last this many of them (fewer when there are fewer)."""
    drift: DriftThresholds = DriftThresholds()
    """When a feature, the data set or the embeddings count as drifted (Evidently's choices)."""
    quality_tolerance: float = Field(0.05, ge=0.0)
    """Live quality falls when even its 95% interval's better bound is worse than the champion's
    test figure by more than this (in the metric's units: 0.05 is 5 points of accuracy)."""
    retrain: bool = True
    """Start a retraining when the data drifts or the live quality falls."""
    retrain_cooldown_seconds: float = Field(6 * 3600.0, ge=0.0, le=366 * 24 * 3600)
    """After a retraining starts, no other starts for this long (no retraining storm)."""
    max_feedback_rows: int = Field(100_000, ge=0)
    """The most labelled production records a retraining adds to the data (the newest)."""


WEEKLY_SECONDS = 7 * 24 * 3600


class DeploySettings(Section):
    """The pipeline as a Prefect deployment, run on a schedule by `mlaas up`."""

    interval_seconds: float | None = Field(None, ge=1, le=366 * 24 * 3600)
    """Run every this many seconds (at most a year). With neither this nor `cron`: weekly."""
    cron: str | None = None
    """A cron schedule instead (`0 3 * * 1`: Mondays at 03:00 UTC)."""

    @model_validator(mode="after")
    def _one_schedule(self) -> DeploySettings:
        if self.interval_seconds is not None and self.cron is not None:
            raise ValueError("set interval_seconds or cron, not both")
        if self.cron is not None and len(self.cron.split()) not in (5, 6):
            raise ValueError(
                f"cron {self.cron!r} is not a cron schedule: five fields, "
                "minute hour day-of-month month day-of-week (`0 3 * * 1`)"
            )
        return self

    @property
    def every_seconds(self) -> float | None:
        """The interval, weekly by default; None when a cron schedule is set."""
        if self.cron is not None:
            return None
        return self.interval_seconds or WEEKLY_SECONDS


class Settings(Section):
    pipeline: PipelineSettings = PipelineSettings()
    load: LoadSettings = LoadSettings()
    validate_: ValidateSettings = Field(default_factory=ValidateSettings, alias="validate")
    split: SplitSettings = SplitSettings()
    train: TrainSettings = TrainSettings()
    tune: TuneSettings = TuneSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    promote: PromoteSettings = PromoteSettings()
    package: PackageSettings = PackageSettings()
    serve: ServeSettings = ServeSettings()
    monitor: MonitorSettings = MonitorSettings()
    deploy: DeploySettings = DeploySettings()

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
            where, section = _key_at(item["loc"])
            message = item["msg"]
            if item["type"] == "extra_forbidden" and section is not None:
                message = _unknown_key(str(item["loc"][-1]), section)
            problems.append(f"  {where}: {message}")
        raise SettingsError(
            f"{source} is not valid:\n" + "\n".join(problems) + "\nFix these keys and run again."
        ) from None


def _key_at(loc: tuple[int | str, ...]) -> tuple[str, type[BaseModel] | None]:
    """A validation error's location as params.yaml spells it (without the tag pydantic adds
    for the chosen model, `train.model.cnn.x` -> `train.model.x`), and the section holding it."""
    section: Any = Settings
    holder: type[BaseModel] | None = None
    shown: list[str] = []
    for part in loc:
        fields = _fields(section)
        if fields is not None:
            holder = section
            shown.append(str(part))
            section = fields.get(str(part))
            continue
        members = {_tag(member): member for member in get_args(section)}
        if isinstance(part, str) and part in members:
            section = members[part]  # the union's member named by `name`: not a key
            continue
        shown.append(str(part))
        holder = section = None
    return ".".join(shown), holder


def _fields(section: Any) -> dict[str, Any] | None:
    """A section's keys (aliases as written in params.yaml) and their types."""
    if not (isinstance(section, type) and issubclass(section, BaseModel)):
        return None
    return {(field.alias or name): field.annotation for name, field in section.model_fields.items()}


def _tag(member: Any) -> str | None:
    fields = _fields(member)
    if fields is None or "name" not in fields:
        return None
    return str(member.model_fields["name"].default)


def _unknown_key(key: str, section: type[BaseModel]) -> str:
    """An unknown key, with the key it most likely meant."""
    known = sorted(_fields(section) or {})
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the keys here are {known}"
    return f"unknown key; {hint}"


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-5` as the number YAML 1.2 says it is (PyYAML keeps
    YAML 1.1, where a float needs a dot, and would hand a learning rate over as a string)."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> Any:
    """A YAML document as params read it (`ParamsLoader`); raises yaml.YAMLError."""
    return yaml.load(text, Loader=ParamsLoader)  # a SafeLoader: no arbitrary objects


def read_params(path: Path | str) -> dict[str, Any]:
    """A params file's mapping of sections, unvalidated (the only place `params.yaml` is read)."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"params file {path} does not exist; pass --params PATH to a YAML file")
    try:
        raw = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SettingsError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"{path} must hold a mapping of sections, not {type(raw).__name__}")
    return raw


def with_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `overrides` laid over it, mapping by mapping: `{"train": {"max_epochs": 3}}`
    changes that one key and keeps the rest of `train`. A non-mapping value replaces whole."""
    merged = dict(raw)
    for key, value in overrides.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = with_overrides(below, value)
        else:
            merged[key] = value
    return merged


ParamsSource = Path | str | dict[str, Any]
"""A params file's path, or the document it holds (what a team-mode deployment carries)."""


def load_settings(params: ParamsSource, overrides: dict[str, Any] | None = None) -> Settings:
    """Read and validate a params file (or its document), with `overrides` (a run's changes)
    laid over it."""
    if isinstance(params, dict):
        raw, source = params, "the deployment's params"
    else:
        raw, source = read_params(params), str(params)
    if overrides:
        return parse_settings(with_overrides(raw, overrides), source=f"{source} with the overrides")
    return parse_settings(raw, source=source)
