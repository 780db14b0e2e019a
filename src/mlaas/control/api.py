"""The control API: training, deployment and prediction as services, over HTTP.

    POST /datasets                      upload a CSV or parquet table (raw body or multipart)
    GET  /datasets, /datasets/{id}      what was uploaded: id, hash, rows, columns and types
    POST /pipelines                     create a pipeline from a params document
    GET  /pipelines, /pipelines/{name}  settings, champion and challenger, last runs, schedule
    POST /pipelines/{name}/runs         train now (overrides, reason): 202 with the run's id
    GET  /runs/{id}                     state, timings, the version and the promotion decision
    POST /pipelines/{name}/promote      make a version champion by hand (who and why recorded)
    POST /pipelines/{name}/rollback     move champion back to the one before
    GET  /healthz                       open, like the model servers' health checks
    GET  /readyz                        open: 503 naming the Prefect or MLflow server that is away

The API key rules are the model servers' (`MLAAS_API_KEY` or `MLAAS_API_KEY_FILE`: 401 without
it, health open); every refusal is a 4xx whose `error` names the field and what to do. The
OpenAPI page is at `/` (its spec at `/docs.json`), complete offline.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Annotated, Any

import anyio
from fastapi import Body, FastAPI, Path, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

import mlaas
from mlaas.control import operations
from mlaas.control.operations import (
    ChampionMoved,
    PipelineView,
    Platform,
    RunView,
)
from mlaas.core.errors import (
    Conflict,
    DataError,
    LockTimeout,
    MlaasError,
    NotFound,
    NotReady,
    PrefectUnavailable,
    SettingsError,
    StoreUnavailable,
    TooLarge,
    TrackingStoreUnavailable,
)
from mlaas.core.settings import PIPELINE_NAME_PATTERN, Settings
from mlaas.serving.api_page import api_page
from mlaas.serving.gateway import ApiKeyGate, ReadableErrors, read_at_most
from mlaas.stores.datasets import DatasetRecord

# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: list[tuple[type[MlaasError], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (NotReady, 409),
    (TooLarge, 413),
    (SettingsError, 422),
    (DataError, 422),
    (LockTimeout, 503),
    (PrefectUnavailable, 503),
    (TrackingStoreUnavailable, 503),
    (StoreUnavailable, 503),
]
PipelineName = Annotated[
    str, Path(pattern=PIPELINE_NAME_PATTERN, description="the pipeline's name (pipeline.name)")
]
Reason = Annotated[str | None, Field(None, max_length=1000, description="why; recorded")]
UPLOAD_FIELD = "file"
SCHEMA_REF = "#/components/schemas/{model}"
DOCUMENT_SCHEMA = "PipelineDocument"
DOCUMENT_REF = SCHEMA_REF.format(model=DOCUMENT_SCHEMA)


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="params sections to change for this run only, as in params.yaml: "
        '{"train": {"max_epochs": 3}} (load, validate, split, train, evaluate, promote)',
    )
    reason: Reason


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, strict=True, description="the version to make champion")
    reason: Reason
    by: str | None = Field(None, max_length=200, description="who asks; the client otherwise")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    by: str | None = Field(None, max_length=200, description="who asks; the client otherwise")


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    ready: bool
    prefect: str
    """`ok`, or why the Prefect server cannot take runs."""
    mlflow: str
    """`ok`, or why the tracking server and registry cannot be used."""


class ErrorBody(BaseModel):
    error: str
    errors: list[dict[str, Any]] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 415, 422, 503)
}


def _who(request: Request, given: str | None) -> str:
    if given:
        return given
    client = request.client.host if request.client else "unknown"
    return f"api client at {client}"


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="mlaas control API",
        version=mlaas.__version__,
        description="Train, deploy and promote models as a service (see the README).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/docs.json",
        responses=ERRORS,
    )

    @app.exception_handler(MlaasError)
    async def refuse(request: Request, error: MlaasError) -> JSONResponse:
        status = next((code for cls, code in STATUS_OF if isinstance(error, cls)), 400)
        return JSONResponse({"error": str(error)}, status_code=status)

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def show_api_page() -> str:
        return api_page("mlaas control API")

    @app.get("/healthz", tags=["health"])
    def health() -> Health:
        return Health(status="ok", version=mlaas.__version__)

    @app.get(
        "/readyz", tags=["health"], response_model=Readiness, responses={503: {"model": Readiness}}
    )
    def readiness() -> JSONResponse:
        """Whether the servers behind the API answer: 503, naming the one that does not."""
        prefect = platform.prefect.problem()
        mlflow = operations.registry_problem(platform.workspace)
        answer = Readiness(
            ready=prefect is None and mlflow is None, prefect=prefect or "ok", mlflow=mlflow or "ok"
        )
        return JSONResponse(answer.model_dump(), status_code=200 if answer.ready else 503)

    @app.post(
        "/datasets",
        status_code=201,
        tags=["datasets"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "the file itself (text/csv, application/vnd.apache.parquet, "
                "application/octet-stream), or multipart/form-data with the file in `file`",
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": [UPLOAD_FIELD],
                            "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
                        }
                    },
                },
            }
        },
    )
    async def upload_dataset(request: Request, filename: str = "upload.csv") -> DatasetRecord:
        """Store a table once, by its content hash; the same bytes again answer the same id."""
        content, name, media_type = await _read_upload(request, filename, platform.max_upload_bytes)
        return await anyio.to_thread.run_sync(
            platform.datasets.add, content, name, media_type, platform.max_upload_bytes
        )

    @app.get("/datasets", tags=["datasets"])
    def list_datasets() -> list[DatasetRecord]:
        return platform.datasets.all()

    @app.get("/datasets/{dataset_id}", tags=["datasets"])
    def get_dataset(dataset_id: Annotated[str, Path(max_length=64)]) -> DatasetRecord:
        return platform.datasets.get(dataset_id)

    @app.post(
        "/pipelines",
        status_code=201,
        tags=["pipelines"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "a params document: the sections of params.yaml, as JSON, with "
                "`pipeline.name` required, and `load.source` (a shipped data set) or "
                "`load.dataset` (an uploaded data set's id); never a path on the server",
                "content": {"application/json": {"schema": {"$ref": DOCUMENT_REF}}},
            }
        },
    )
    async def create_pipeline(request: Request) -> PipelineView:
        document = await _json_object(request)
        return await anyio.to_thread.run_sync(operations.create_pipeline, platform, document)

    @app.get("/pipelines", tags=["pipelines"])
    def list_pipelines() -> list[PipelineView]:
        return operations.list_pipelines(platform)

    @app.get("/pipelines/{name}", tags=["pipelines"])
    def get_pipeline(name: PipelineName) -> PipelineView:
        return operations.describe_pipeline(platform, name)

    @app.post("/pipelines/{name}/runs", status_code=202, tags=["runs"])
    def start_run(name: PipelineName, run: Annotated[RunRequest, Body()]) -> RunView:
        """Train now: a run of the pipeline's Prefect deployment (after one in progress)."""
        return operations.start_run(platform, name, run.overrides, run.reason)

    @app.get("/runs/{run_id}", tags=["runs"])
    def get_run(run_id: Annotated[str, Path(max_length=64)]) -> RunView:
        return operations.describe_run(platform, run_id)

    @app.post("/pipelines/{name}/promote", tags=["champion"])
    def promote(
        name: PipelineName, move: Annotated[PromoteRequest, Body()], request: Request
    ) -> ChampionMoved:
        return operations.promote(platform, name, move.version, _who(request, move.by), move.reason)

    @app.post("/pipelines/{name}/rollback", tags=["champion"])
    def rollback(
        name: PipelineName, move: Annotated[RollbackRequest, Body()], request: Request
    ) -> ChampionMoved:
        return operations.roll_back(platform, name, _who(request, move.by), move.reason)

    def openapi() -> dict[str, Any]:
        """FastAPI's spec, with the pipeline document's schema: params.yaml's, as validated."""
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            document, definitions = pipeline_document_schema()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.update({**definitions, DOCUMENT_SCHEMA: document})
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Swagger UI's files, from the copy BentoML ships (nothing is fetched from the internet).
    static = files("bentoml").joinpath("_internal/server/static_content")
    app.mount("/static_content", StaticFiles(directory=str(static)), name="static_content")
    # Outermost first: a request without the key learns nothing.
    app.add_middleware(ReadableErrors)
    app.add_middleware(ApiKeyGate)
    return app


def pipeline_document_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of a pipeline document and the schemas it refers to: `Settings` as
    params.yaml is validated, `pipeline.name` required, and without the keys that name
    something on the server (`load.path`: an upload's `load.dataset` instead)."""
    schema = Settings.model_json_schema(by_alias=True, ref_template=SCHEMA_REF)
    definitions: dict[str, Any] = schema.pop("$defs")
    schema["title"] = DOCUMENT_SCHEMA
    schema["required"] = ["pipeline"]
    del schema["properties"]["package"]
    definitions.pop("PackageSettings")
    pipeline = definitions["PipelineSettings"]
    pipeline["required"] = ["name"]
    del definitions["LoadSettings"]["properties"]["path"]
    del definitions["ServeSettings"]["properties"]["host"]
    for section in schema["properties"].values():
        section.pop("default", None)  # defaults stated in full would repeat every section
    return schema, definitions


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        document = json.loads(await request.body())
    except ValueError:
        raise SettingsError("body: not JSON; send the params document as a JSON object") from None
    if not isinstance(document, dict):
        raise SettingsError(
            f"body: a params document is a JSON object of sections, not {type(document).__name__}"
        )
    return document


async def _read_upload(request: Request, filename: str, max_bytes: int) -> tuple[bytes, str, str]:
    """The uploaded file's bytes, its name and media type; read no further than the limit."""
    declared = request.headers.get("content-length", "")
    too_large = TooLarge(
        f"the upload is over the limit of {max_bytes} bytes (`mlaas up --max-upload-bytes N`)"
    )
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:  # room for multipart framing
        raise too_large
    messages, fits = await read_at_most(request.receive, max_bytes + 64 * 1024)
    if not fits:
        raise too_large
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    media_type = request.headers.get("content-type", "application/octet-stream")
    if not media_type.lower().startswith("multipart/form-data"):
        return body, filename, media_type

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form_request = Request(request.scope, replay)
    try:
        form = await form_request.form(max_files=1, max_fields=10)
    except Exception as error:  # starlette's MultiPartException and parser errors alike
        raise DataError(f"the multipart body cannot be read: {error}") from None
    upload = form.get(UPLOAD_FIELD)
    if not isinstance(upload, UploadFile):
        raise SettingsError(
            f"{UPLOAD_FIELD}: send the table as the multipart field {UPLOAD_FIELD!r}"
        )
    content = await upload.read()
    if len(content) > max_bytes:
        raise too_large
    return content, upload.filename or filename, upload.content_type or "application/octet-stream"
