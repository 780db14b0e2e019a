"""What the control API and `mlaas train | pipelines | runs` do, as functions of one `Platform`.

Each checks what it is given before it changes anything: a pipeline document is validated as
`params.yaml` is (and may not name a path on the server), a run's overrides are validated
against the pipeline's settings before the run is created, a version to promote must exist.
Errors are the `mlaas.core.errors` classes; the API turns each into its 4xx.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlaas.control.prefect_api import FINAL_STATES, PrefectApi
from mlaas.core.errors import Conflict, MlaasError, NotFound, PrefectUnavailable, SettingsError
from mlaas.core.monitoring import MonitorCheck
from mlaas.core.records import Decision, RunOutcome
from mlaas.core.settings import (
    Settings,
    load_settings,
    parse_settings,
    read_params,
    with_overrides,
)
from mlaas.families import check_settings
from mlaas.serving.launch import ensure_port_free
from mlaas.stores import supervisor
from mlaas.stores.catalog import Catalog, CatalogEntry
from mlaas.stores.datasets import DatasetStore, with_local_data
from mlaas.stores.workspace import Workspace

_logger = logging.getLogger("mlaas.control")
FIRST_API_SERVE_PORT = 3001
LAST_RUNS_SHOWN = 5
# Keys a document sent over the network may not set: each names a file or an address on the
# server (the data comes from a shipped set or an upload; packaging from the platform's own).
SERVER_ONLY_KEYS = {
    ("load", "path"): "upload the file with POST /datasets and give its id as load.dataset",
    ("package",): "a pipeline created over the API is packaged with the platform's own files",
    ("serve", "host"): "its model server listens where the platform's servers listen",
    ("load", "extra_rows"): "the platform's monitor adds the labelled production rows itself",
}
# A run changes how a model is trained and judged; what it is and how it is served stay.
RUN_OVERRIDABLE = ("load", "validate", "split", "train", "evaluate", "promote")


@dataclass(frozen=True)
class Platform:
    """The running platform the control plane acts on."""

    workspace: Workspace
    prefect: PrefectApi
    mlflow_url: str
    max_upload_bytes: int
    project_root: Path
    """Where `mlaas up` ran: the bentofile and the source the platform packages with."""
    reserved_ports: frozenset[int] = frozenset()
    """The platform's own ports (Prefect, MLflow, the API): never a model server's."""
    work_pool: str | None = None
    """Team mode: the work pool whose workers run the deployments (None: `mlaas up`'s runner)."""

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.workspace)

    @property
    def datasets(self) -> DatasetStore:
        return DatasetStore(self.workspace)


class VersionView(BaseModel):
    version: int
    metrics: dict[str, float]
    """The version's test metrics."""
    decided_on: str | None
    """The metric its promotion decision compared (None for a version without a decision)."""
    mlflow_url: str


class RunSummary(BaseModel):
    id: str
    state: str
    reason: str | None
    scheduled: bool
    """Started by the schedule (not by a person or a program)."""
    expected_start: datetime | None
    start_time: datetime | None
    end_time: datetime | None


class Schedule(BaseModel):
    interval_seconds: float | None
    cron: str | None


class ServerView(BaseModel):
    url: str
    state: str
    """`up`, `down`, or `dead` (started, then exited)."""
    problem: str | None = None
    """Why a server the platform keeps trying to start is not up (its port held by another
    program, a Bento that does not load): the last try's error."""


class PipelineView(BaseModel):
    name: str
    family: str
    added_by: str
    params: dict[str, Any]
    """The settings as created (for a pipeline made over the API, the document it was sent)."""
    schedule: Schedule
    champion: VersionView | None
    challenger: VersionView | None
    last_runs: list[RunSummary]
    next_run: datetime | None
    server: ServerView
    monitoring: MonitoringView | None = None
    """The last check of the champion by the `monitor` flow; None before the first."""


class MonitoringView(BaseModel):
    checked_at: datetime
    model_version: int
    window_records: int
    drifted: bool
    drift_share: float | None
    drifted_features: list[str]
    live_metric: str | None
    live_value: float | None
    live_feedback: int
    quality_fell: bool
    retraining: str
    """started, cooling_down, not_wanted or failed"""
    reason: str
    retraining_run: str | None
    report: str | None


def monitoring_view(workspace: Workspace, name: str) -> MonitoringView | None:
    path = workspace.pipeline(name).drift_record
    if not path.is_file():
        return None
    check = MonitorCheck.model_validate_json(path.read_text())
    quality = check.quality
    return MonitoringView(
        checked_at=datetime.fromtimestamp(check.checked_at, UTC),
        model_version=check.model_version,
        window_records=check.window.records,
        drifted=check.drifted,
        drift_share=check.data.share,
        drifted_features=[f.feature for f in check.data.features if f.drifted],
        live_metric=quality.metric if quality else None,
        live_value=quality.value if quality else None,
        live_feedback=quality.count if quality else 0,
        quality_fell=check.quality_fell,
        retraining=check.retraining.started,
        reason=check.retraining.reason,
        retraining_run=check.retraining.run_id,
        report=check.report,
    )


class RunLinks(BaseModel):
    prefect: str
    mlflow: str | None


class RunView(BaseModel):
    id: str
    pipeline: str
    state: str
    """Prefect's state type: SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLED."""
    state_name: str
    message: str | None
    reason: str | None
    overrides: dict[str, Any]
    created: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    run_seconds: float | None
    outcome: RunOutcome | None
    """Once it finished: the registered version and the promotion decision with the champion's
    metric it was compared with (or why the validation gate refused the data)."""
    links: RunLinks


class ChampionMoved(BaseModel):
    pipeline: str
    from_version: int | None
    to_version: int
    moved: bool
    bento: str
    who: str
    reason: str | None


# --- pipelines -----------------------------------------------------------------------------


def _refuse_server_keys(document: dict[str, Any], where: str) -> None:
    for key, instead in SERVER_ONLY_KEYS.items():
        section: Any = document
        for part in key:
            if not isinstance(section, dict) or part not in section:
                break
            section = section[part]
        else:
            raise SettingsError(
                f"{where}{'.'.join(key)}: not settable over the API (it names a path or an "
                f"address on the server); {instead}"
            )


def _model_server_port(platform: Platform, taken_by: dict[int, str]) -> int:
    """The first port from 3001 that no pipeline of the platform serves on and nothing holds."""
    port = FIRST_API_SERVE_PORT
    while True:
        if port not in taken_by and port not in platform.reserved_ports:
            try:
                ensure_port_free("127.0.0.1", port)
                return port
            except MlaasError:  # held by some program: try the next one
                pass
        port += 1


def _serve_ports(platform: Platform) -> dict[int, str]:
    ports: dict[int, str] = {}
    for entry in platform.catalog.entries():
        try:
            ports[load_settings(entry.params).serve.port] = entry.name
        except SettingsError:
            continue  # a file the user broke since: `up` reports it
    return ports


def params_for_document(platform: Platform, document: dict[str, Any]) -> dict[str, Any]:
    """The params file a pipeline document becomes: uploads named by id resolved to their
    files, a model server port chosen when none is given, packaged with the platform's files."""
    _refuse_server_keys(document, "")
    params = copy.deepcopy(document)
    pipeline = params.get("pipeline")
    if not isinstance(pipeline, dict) or "name" not in pipeline:
        raise SettingsError("pipeline.name: required; the name of the pipeline to create")
    load = params.setdefault("load", {})
    if isinstance(load, dict) and "dataset" in load:
        dataset = load["dataset"]
        if platform.datasets.find(str(dataset)) is None:
            raise SettingsError(
                f"load.dataset: no uploaded data set {dataset!r}; upload it with POST /datasets "
                "and give the id it answers"
            )
        if load.get("source") is not None:
            raise SettingsError("load: give load.source or load.dataset, not both")
        load["source"] = None  # (the default is a shipped data set)
    serve = params.setdefault("serve", {})
    if isinstance(serve, dict):
        taken_by = _serve_ports(platform)
        port = serve.get("port")
        if port is None:
            serve["port"] = _model_server_port(platform, taken_by)
        elif isinstance(port, int) and (port in taken_by or port in platform.reserved_ports):
            # (A port that is no number is refused, naming serve.port, with the settings.)
            raise Conflict(
                f"serve.port: {port} is taken by {taken_by.get(port, 'the platform')}; leave it "
                "out and the platform picks a free one"
            )
    params["package"] = {
        "bentofile": str(platform.project_root / "bentofile.yaml"),
        "build_context": str(platform.project_root / "src"),
    }
    return params


def create_pipeline(platform: Platform, document: dict[str, Any]) -> PipelineView:
    """A new pipeline from a params document: validated whole, then added to the catalog (the
    runner deploys it within seconds). Nothing is written for a document that is refused."""
    params = params_for_document(platform, document)
    name = params["pipeline"]["name"]
    # Before the rest is validated: a taken name is the answer whatever else is wrong.
    if isinstance(name, str) and (
        platform.catalog.find(name) is not None or _has_model(platform.workspace, name)
    ):
        raise Conflict(f"pipeline.name: a pipeline named {name!r} exists; choose another name")
    settings = parse_settings(params, source="the pipeline document")
    check_settings(with_local_data(settings, platform.workspace))  # the upload's columns too
    from mlaas.orchestration.deployments import deployment_of, for_workers

    # Built before anything is written: settings that pass validation yet make no deployment
    # are a gap in the validation, and must not leave a pipeline no runner can serve.
    try:
        deployment_of(settings, platform.catalog.params_file(name), platform.workspace.home)
    except (ValueError, OverflowError, TypeError) as error:
        raise SettingsError(f"deploy: these settings make no Prefect deployment: {error}") from None
    entry = platform.catalog.create(settings.pipeline.name, params, request=document)
    try:
        # At once, so that a run can be asked for as soon as the pipeline exists; the runner
        # (or, in team mode, the pool's workers) then runs it. Team mode's deployment carries
        # the params file's document, which exists from here on.
        deployment = deployment_of(
            settings, Path(entry.params), platform.workspace.home, platform.work_pool
        )
        if platform.work_pool is None:
            deployment.apply()
        else:
            for_workers(deployment).apply(work_pool_name=platform.work_pool)
    except Exception as error:  # Prefect down or busy: the runner deploys it when it can
        _logger.warning("pipeline %s: deployment deferred to the runner: %s", entry.name, error)
    return describe_pipeline(platform, name)


def list_pipelines(platform: Platform) -> list[PipelineView]:
    """Every pipeline that can be described; one whose params file went missing or broke since
    `mlaas up` deployed it is left out with a warning (`mlaas up` says what is wrong with it)."""
    views = []
    for name in platform.catalog.names():
        try:
            views.append(describe_pipeline(platform, name))
        except SettingsError as error:
            _logger.warning("pipeline %s left out of the list: %s", name, error)
    return views


def describe_pipeline(platform: Platform, name: str) -> PipelineView:
    entry = platform.catalog.get(name)
    settings = load_settings(entry.params)
    runs: list[dict[str, Any]] = []
    upcoming = None
    # Without Prefect (stopped, or not deployed yet) the view still shows the champion.
    with suppress(NotFound, PrefectUnavailable):
        deployment = platform.prefect.deployment(name)
        runs = platform.prefect.runs(deployment["id"], LAST_RUNS_SHOWN + 5)
        upcoming = platform.prefect.next_scheduled(deployment["id"])
    started = [run for run in runs if run["state_type"] != "SCHEDULED"][:LAST_RUNS_SHOWN]
    return PipelineView(
        name=name,
        family=settings.pipeline.family,
        added_by=entry.added_by,
        params=platform.catalog.request(name) or settings.as_params(),
        schedule=Schedule(
            interval_seconds=settings.deploy.every_seconds, cron=settings.deploy.cron
        ),
        champion=_version_view(platform, name, "champion"),
        challenger=_version_view(platform, name, "challenger"),
        last_runs=[_run_summary(run) for run in started],
        next_run=upcoming["expected_start_time"] if upcoming else None,
        server=model_server_view(platform.workspace, name, settings),
        monitoring=monitoring_view(platform.workspace, name),
    )


def model_server_view(workspace: Workspace, name: str, settings: Settings) -> ServerView:
    part = model_server_part(name)
    record = supervisor.read_record(workspace, part)
    if record is not None and supervisor.is_running(record):
        return ServerView(url=record.url, state="up")
    problem = supervisor.problem(workspace, part)
    if record is None:
        url = f"http://{settings.serve.host}:{settings.serve.port}"
        return ServerView(url=url, state="down", problem=problem)
    return ServerView(url=record.url, state="dead", problem=problem)


def model_server_part(pipeline: str) -> str:
    """The supervisor's name for a pipeline's model server."""
    return f"serve-{pipeline}"


def _run_summary(run: dict[str, Any]) -> RunSummary:
    return RunSummary(
        id=run["id"],
        state=run["state_type"],
        reason=(run.get("parameters") or {}).get("reason"),
        scheduled=bool(run.get("auto_scheduled")),
        expected_start=run.get("expected_start_time"),
        start_time=run.get("start_time"),
        end_time=run.get("end_time"),
    )


# --- runs ----------------------------------------------------------------------------------


def check_overrides(entry: CatalogEntry, overrides: dict[str, Any]) -> Settings:
    """The settings a run with `overrides` would train with, or the error naming the key."""
    unknown = sorted(set(overrides) - set(RUN_OVERRIDABLE))
    if unknown:
        raise SettingsError(
            f"overrides.{unknown[0]}: a run may change only {list(RUN_OVERRIDABLE)}; to change "
            "what the pipeline is or how it is served, create a new pipeline"
        )
    _refuse_server_keys(overrides, "overrides.")
    raw = with_overrides(read_params(entry.params), overrides)
    settings = parse_settings(raw, source="the pipeline's settings with the run's overrides")
    check_settings(settings)
    return settings


def start_run(
    platform: Platform, name: str, overrides: dict[str, Any], reason: str | None
) -> RunView:
    """A run of the pipeline's deployment now (it queues behind one in progress): the Prefect
    UI shows it with its overrides and reason."""
    entry = platform.catalog.get(name)
    check_overrides(entry, overrides)
    deployment = platform.prefect.deployment(name)
    created = platform.prefect.start_run(
        deployment["id"], {"overrides": overrides, "reason": reason}, ["mlaas", "requested"]
    )
    return _run_view(platform, created, name)


def describe_run(platform: Platform, run_id: str) -> RunView:
    try:
        uuid.UUID(run_id)
    except ValueError:
        raise SettingsError(f"run_id: {run_id!r} is not a run id (a UUID)") from None
    flow_run = platform.prefect.flow_run(run_id)
    pipeline = _pipeline_of(platform, flow_run)
    return _run_view(platform, flow_run, pipeline)


def _pipeline_of(platform: Platform, flow_run: dict[str, Any]) -> str:
    deployment_id = flow_run.get("deployment_id")
    if deployment_id is None:
        raise NotFound(f"run_id: run {flow_run['id']} is not a run of a deployed pipeline")
    return platform.prefect.deployment_name(str(deployment_id))


def _run_view(platform: Platform, flow_run: dict[str, Any], pipeline: str) -> RunView:
    state = flow_run.get("state") or {}
    parameters = flow_run.get("parameters") or {}
    outcome = None
    if state.get("type") in FINAL_STATES:
        recorded = platform.prefect.run_outcome(flow_run["id"], pipeline)
        outcome = RunOutcome.model_validate(recorded) if recorded is not None else None
    mlflow = None
    if outcome is not None and outcome.version is not None:
        mlflow = _version_url(platform, pipeline, outcome.version.version)
    return RunView(
        id=flow_run["id"],
        pipeline=pipeline,
        state=state.get("type", "UNKNOWN"),
        state_name=state.get("name", "Unknown"),
        message=state.get("message"),
        reason=parameters.get("reason"),
        overrides=parameters.get("overrides") or {},
        created=flow_run.get("created"),
        start_time=flow_run.get("start_time"),
        end_time=flow_run.get("end_time"),
        run_seconds=flow_run.get("total_run_time"),
        outcome=outcome,
        links=RunLinks(
            prefect=f"{platform.prefect.ui}/runs/flow-run/{flow_run['id']}", mlflow=mlflow
        ),
    )


def _version_url(platform: Platform, name: str, version: int) -> str:
    return f"{platform.mlflow_url}/#/models/{name}/versions/{version}"


# --- champion moves ------------------------------------------------------------------------


def promote(
    platform: Platform, name: str, version: int, who: str, reason: str | None
) -> ChampionMoved:
    from mlaas.stages.rollback import promote_version

    entry = platform.catalog.get(name)
    with _registry_answers(platform.workspace, f"making {name} v{version} champion"):
        move = promote_version(name, version, platform.workspace, who, reason)
        return _packaged(platform, entry, move.from_version, move.to_version, who, reason)


def roll_back(platform: Platform, name: str, who: str, reason: str | None) -> ChampionMoved:
    from mlaas.stages.rollback import rollback

    entry = platform.catalog.get(name)
    with _registry_answers(platform.workspace, f"rolling {name}'s champion back"):
        move = rollback(name, platform.workspace, who, reason)
        return _packaged(platform, entry, move.from_version, move.to_version, who, reason)


def _packaged(
    platform: Platform,
    entry: CatalogEntry,
    from_version: int | None,
    to_version: int,
    who: str,
    reason: str | None,
) -> ChampionMoved:
    """Package the champion as moved: the pipeline's model server swaps it in from there."""
    from mlaas.stages import package
    from mlaas.stages.context import StageContext

    packaged = package.run(StageContext(load_settings(entry.params), platform.workspace))
    return ChampionMoved(
        pipeline=entry.name,
        from_version=from_version,
        to_version=to_version,
        moved=from_version != to_version,
        bento=packaged.bento_tag,
        who=who,
        reason=reason,
    )


# --- the registry, imported on first use (MLflow takes seconds to import) ------------------


@contextmanager
def _registry_answers(workspace: Workspace, doing: str) -> Iterator[None]:
    """MLflow's own errors as the 503 that names the tracking server, not a 500: the API's
    request did nothing wrong."""
    from mlaas.stores.registry import naming_the_store

    with naming_the_store(workspace, f"failed while {doing}"):
        yield


def registry_problem(workspace: Workspace) -> str | None:
    """Why the tracking store cannot be used now; None if it can (the control API's /readyz)."""
    from mlaas.stores.tracking import tracking_client
    from mlaas.stores.tracking_server import is_tracking_server, probe_tracking_server

    try:
        if is_tracking_server(workspace.tracking_uri):
            probe_tracking_server(workspace.tracking_uri)
        else:
            with _registry_answers(workspace, "searching the registry"):
                tracking_client(workspace).search_registered_models(max_results=1)
    except MlaasError as error:
        return str(error)
    return None


def _has_model(workspace: Workspace, name: str) -> bool:
    from mlaas.stores.registry import Registry

    with _registry_answers(workspace, f"looking for a registered model {name!r}"):
        return Registry(workspace).has_model(name)


def _version_view(platform: Platform, name: str, alias: str) -> VersionView | None:
    with _registry_answers(platform.workspace, f"reading {name}@{alias}"):
        return _read_version_view(platform, name, alias)


def _read_version_view(platform: Platform, name: str, alias: str) -> VersionView | None:
    from mlaas.stages.promote import DECISION_TAG
    from mlaas.stores.registry import Registry

    registry = Registry(platform.workspace)
    found = registry.version_with_alias(name, alias)
    if found is None:
        return None
    metrics = registry.run_metrics(found.run_id)
    decision = registry.version_tags(name, found.version).get(DECISION_TAG)
    return VersionView(
        version=found.version,
        metrics={key: value for key, value in metrics.items() if key.startswith("test_")},
        decided_on=Decision.model_validate_json(decision).metric if decision else None,
        mlflow_url=_version_url(platform, name, found.version),
    )
