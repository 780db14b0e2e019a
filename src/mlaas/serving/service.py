"""The BentoML service: one packaged pipeline's champion behind a typed HTTP API.

    POST /predict    {"instances": [...]} -> {"request_id", "predictions": [...], "model": {...}}
    POST /feedback   {"request_id", "index", "label"} (or {"feedback": [...]}): the true outcome
    POST /recommend  recommendation models only: {"user_id", "k"} -> the top-k items it has
                     not rated, each with its predicted rating and its count of ratings
    GET  /model      name, version, alias, test metrics and lineage tags of the served model,
                     and whether the MLflow registry answers (`registry`)
    /healthz /readyz /livez /metrics, and the OpenAPI page at / (its spec at /docs.json)

With an API key configured (`MLAAS_API_KEY`, or a file named by `MLAAS_API_KEY_FILE`, read when
the server starts), every route but the health checks answers 401 to a request without it.
Bodies over `serve.max_request_bytes` get 413, and bodies that are not JSON 415, before any of
them is parsed.

Which pipeline it serves is a Bento argument (`--arg model=NAME`, baked in by `package`). The
request schema follows from the model card (an image's shape, a table's feature names and
types, a text length limit, user and item ids), so bad input is refused with a 4xx that names
the field before any model code runs. Concurrent /predict requests share model calls through
the in-process micro-batcher (`mlaas.serving.batching`). An image model's body of plain arrays
is read past BentoML's route (`mlaas.serving.lean_route`); both routes answer through
`ModelService.respond`.

Each answer carries its request id (also as `X-Request-ID`) and, per instance, the warnings of
the serving contract and its out-of-distribution score (`mlaas.serving.observation`); answered
instances go to the pipeline's prediction log, off the request path (`mlaas.serving.recording`).

The server follows its pipeline's champion: a newly packaged one is loaded, checked and swapped
in while it serves (`mlaas.serving.hot_swap`), and every response names the model that answered.
It needs no registry for that: one that is away is reported (`/model`, /metrics) and the server
keeps serving (`mlaas.serving.registry_watch`); /readyz stays 200, since BentoML's readiness is
a yes or no with a fixed body, and a server that answers is ready.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import bentoml
import orjson
from bentoml.exceptions import InvalidArgument, ServiceUnavailable, UnprocessableEntity
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from mlaas.core.errors import NotReady
from mlaas.core.model_card import read_card
from mlaas.core.reference import with_predictions
from mlaas.core.tasks import task_of
from mlaas.families import get_family
from mlaas.families.base import InvalidInstance
from mlaas.modeling.bundle import MODEL_SUBDIR, read_serving_info
from mlaas.serving.api_page import api_page, with_required_bodies
from mlaas.serving.batching import Overloaded
from mlaas.serving.collector import settle_after_start
from mlaas.serving.gateway import (
    ApiKeyGate,
    ReadableErrors,
    RequestLimits,
    log_client_errors_as_one_line,
)
from mlaas.serving.hot_swap import (
    ChampionWatcher,
    LoadedModel,
    ModelDescription,
    ServedModel,
    ServedState,
    load_state,
)
from mlaas.serving.launch import ServerOptions
from mlaas.serving.lean_route import LeanPredict, read_array_instances
from mlaas.serving.observation import Observed, Watch, observe
from mlaas.serving.recording import (
    FEEDBACK_ERRORS,
    REQUEST_ID_HEADER,
    FeedbackAccepted,
    FeedbackBatch,
    FeedbackItem,
    FeedbackRefused,
    Recorder,
    request_id_from,
)
from mlaas.serving.registry_watch import RegistryGauges, RegistryStatus, RegistryWatcher
from mlaas.stores.bento_store import bentoml_store_home, stored_model_folder
from mlaas.stores.prediction_log import LogCounters
from mlaas.stores.workspace import Workspace


class ServiceArguments(BaseModel):
    model: str = "mnist"
    """Name of the pipeline (and BentoML model) to serve: the Bento's build argument."""


arguments = bentoml.use_arguments(ServiceArguments)
options = ServerOptions.from_environment(os.environ)
bento_model = bentoml.models.BentoModel(f"{arguments.model}:latest")
if bento_model.stored is None:
    raise NotReady(
        f"no packaged model named {arguments.model!r} in the BentoML store: "
        "run the pipeline (`make run`) so its `package` stage builds one"
    )
# The API's schema is part of the class definition, so the model card is read here, once; a
# model swapped in later must fit it (`mlaas.serving.hot_swap.ApiContract`).
bundle_dir = Path(bento_model.stored.path)
model_tag = str(bento_model.stored.tag)
serving = read_serving_info(bundle_dir)
card = read_card(bundle_dir / MODEL_SUBDIR)
family = get_family(card.family)
task = task_of(card)
Instance = family.instance_type(card)
Instances = Annotated[
    list[Instance],  # type: ignore[valid-type]
    Field(min_length=1, max_length=serving.serve.max_instances),
]


class Observations(BaseModel):
    warnings: list[str] = Field(
        default_factory=list,
        description="what in this instance lies outside what the model learned: a field past "
        "its training range or a category never seen (`serve.out_of_contract: warn`), or an "
        "out-of-distribution score past its threshold",
    )
    ood_score: float | None = Field(
        None,
        json_schema_extra={"nullable": True},
        description="how unlike the training data this instance is: its furthest numeric "
        "feature, in robust spreads from the training median (null for models trained before "
        "scores were calibrated)",
    )


class ClassPrediction(Observations):
    label: int | str
    probabilities: dict[str, float]


class ValuePrediction(Observations):
    value: float


class RatingPrediction(Observations):
    rating: float


Prediction = {
    "classification": ClassPrediction,
    "regression": ValuePrediction,
    "rating": RatingPrediction,
}[card.task]


class PredictRequest(bentoml.IODescriptor):
    model_config = ConfigDict(extra="forbid")

    instances: Instances


# Responses are IODescriptors too: for a plain model BentoML derives the media type from a JSON
# schema it rebuilds on every response (about half a millisecond of a 4 ms request).
class PredictResponse(bentoml.IODescriptor):
    request_id: str = Field(
        description="names this answer in `POST /feedback` (also sent as X-Request-ID; a "
        "client's own X-Request-ID is kept when it is 1-128 letters, digits or `._:-`)"
    )
    predictions: list[Prediction]  # type: ignore[valid-type]
    model: ServedModel


class RecommendRequest(bentoml.IODescriptor):
    model_config = ConfigDict(extra="forbid")

    # Text only: BentoML's OpenAPI page drops the `| int` of a union, and what the page shows
    # is the contract. strict: `true` is not an id, "5" not a count.
    user_id: str = Field(min_length=1, max_length=256, strict=True)
    k: int = Field(10, ge=1, le=serving.serve.max_instances, strict=True)


class RecommendedItem(BaseModel):
    """One recommended item; the list never holds an item the user rated anywhere in the data."""

    item_id: str
    predicted_rating: float = Field(
        description="the model's rating of this item by this user, within the rating range "
        "(for a user the model was not trained on: the mean rating plus the item's bias)"
    )
    rating_count: int = Field(
        ge=0, description="how many ratings the item has in the training data"
    )


class RecommendResponse(bentoml.IODescriptor):
    user_id: str
    items: list[RecommendedItem] = Field(
        description="best first: by predicted_rating, or by rating_count in the fallback"
    )
    # BentoML's page keeps only the first type of a union, so the null is declared here.
    fallback: Literal["popularity"] | None = Field(
        json_schema_extra={"nullable": True},
        description="null for personal recommendations; `popularity` for a user the model was "
        "not trained on, who gets the items with the most ratings instead",
    )
    model: ServedModel


class ModelAndRegistry(ModelDescription):
    """What `GET /model` answers: the served model, and what the server knows of its registry."""

    registry: RegistryStatus


# No FastAPI pages of its own (/docs, /redoc): they load Swagger UI and ReDoc from a CDN, and
# the page at / documents every route, this app's included.
info_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.service(name=f"mlaas-{arguments.model}", traffic={"timeout": 30}, workers=options.workers)
@bentoml.asgi_app(info_app, path="/")
class ModelService:
    bento_model = bento_model

    def __init__(self) -> None:
        log_client_errors_as_one_line()  # in each worker, which is where requests are logged
        served = load_state(Path(self.bento_model.path), model_tag, answer)
        # The global store, not the Bento's own copy: a champion packaged later is only there.
        store = bentoml_store_home()
        workspace = Workspace.from_env()
        paths = workspace.pipeline(arguments.model)
        self.champion = ChampionWatcher(
            served,
            record=paths.package_result,
            locate=lambda tag: stored_model_folder(store, tag),
            answer=answer,
        )
        self.champion.start(serving.serve.champion_poll_seconds)
        self.registry = RegistryWatcher(
            workspace.tracking_uri,
            serving.name,
            serving.alias,
            on_status=RegistryGauges(serving.name).show,
        )
        self.registry.start(serving.serve.registry_poll_seconds)
        monitor = serving.monitor
        if not options.prediction_log:
            monitor = monitor.model_copy(update={"log_predictions": False})
        self.recorder = Recorder(paths.predictions_dir, paths.feedback_dir, monitor)
        self.recorder.start()
        self.counters = FlagCounters()
        # Last: what start-up made is frozen out of the collector's sight (collector.py).
        settle_after_start()

    @bentoml.on_shutdown
    def stop_watching(self) -> None:
        self.champion.stop()
        self.registry.stop()
        self.recorder.stop()

    @info_app.get("/model")
    def describe_model(self) -> ModelAndRegistry:
        described = self.champion.current.description
        return ModelAndRegistry(**dict(described), registry=self.registry.status)

    @info_app.post("/feedback", status_code=202, responses=FEEDBACK_ERRORS)
    async def record_feedback(self, body: FeedbackItem | FeedbackBatch) -> FeedbackAccepted:
        items = body.feedback if isinstance(body, FeedbackBatch) else [body]
        card = self.champion.current.card
        try:  # in a thread: an id this process did not answer is looked up in the log files
            recorded = await anyio.to_thread.run_sync(self.recorder.accept_feedback, items, card)
        except FeedbackRefused as refused:
            raise HTTPException(refused.status, str(refused)) from None
        return FeedbackAccepted(recorded=recorded)

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, instances: list[Any], ctx: bentoml.Context) -> Response:
        # Answered as JSON bytes made here: the response model would be built and dumped
        # again on every request. (Array bodies of image models come through LeanPredict.)
        answer, request_id = await self.respond(
            instances, ctx.request.headers.get(REQUEST_ID_HEADER)
        )
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        return Response(answer, media_type="application/json")

    async def respond(self, instances: list[Any], sent_id: str | None) -> tuple[bytes, str]:
        """/predict's answer to validated instances, as PredictResponse's JSON, and the request
        id it carries (the client's `sent_id` when usable): what both routes send."""
        started = time.perf_counter()
        request_id = request_id_from(sent_id)
        # Read once: a swap meanwhile does not change the model that answers this request.
        served = self.champion.current
        # Per request, before batching: one bad request must not fail its batch-mates.
        refuse_out_of_contract(served, instances)
        if not options.batching:
            observed = await anyio.to_thread.run_sync(answer, served.model, served.watch, instances)
        else:
            try:
                observed = await served.batcher.submit(instances)
            except Overloaded as error:
                raise ServiceUnavailable(str(error)) from None
        self.counters.count(observed, self.recorder.writer.counters)
        self.recorder.record(
            request_id,
            instances,
            observed,
            served.identity.version,
            served.tag,
            (time.perf_counter() - started) * 1000,
        )
        response = {
            "request_id": request_id,
            "predictions": [
                {**item.prediction, "warnings": item.warnings, "ood_score": item.ood_score}
                for item in observed
            ],
            "model": served.identity.model_dump(mode="json"),
        }
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), request_id

    if card.task == "rating":

        @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
        def recommend(self, user_id: str, k: int) -> RecommendResponse:
            from mlaas.families.recommendation_ranking import recommend

            served = self.champion.current
            recommended = recommend(served.model, str(user_id), k)
            return RecommendResponse(
                user_id=str(user_id),
                items=[RecommendedItem(**asdict(item)) for item in recommended.items],
                fallback=recommended.fallback,
                model=served.identity,
            )


def answer(model: LoadedModel, watch: Watch, instances: list[Any]) -> list[Observed]:
    """Observed predictions for validated instances: the model call both paths share. (The
    family and task are the start-up card's: a swapped-in model has the same, or it is
    refused.)"""
    features = family.instances_to_features(instances, model.card)
    try:
        outputs = model.predict(features)
    except InvalidInstance as error:
        raise InvalidArgument(f"instances: {error}") from None
    predictions = task.describe(outputs, model.card)
    described = family.describe_inputs(features, model.card, watch.learned)
    return observe(with_predictions(described, predictions, model.card.task), predictions, watch)


def refuse_out_of_contract(served: ServedState, instances: list[Any]) -> None:
    """The checks a request must pass before it joins a batch: the model's own (an unknown
    user) and, with `serve.out_of_contract: reject`, the learned ranges and sets."""
    reject = serving.serve.out_of_contract == "reject" and served.watch.learned
    if not (served.model.checks_input or reject):
        return
    features = family.instances_to_features(instances, served.card)
    if served.model.checks_input:
        try:
            served.model.check(features)
        except InvalidInstance as error:
            raise InvalidArgument(f"instances: {error}") from None
    if reject:
        warnings = family.describe_inputs(features, served.card, served.watch.learned).warnings
        problems = [
            f"instances[{index}].{warning}"
            for index, found in enumerate(warnings)
            for warning in found
        ]
        if problems:
            raise UnprocessableEntity(
                "outside what the model learned (serve.out_of_contract is reject): "
                + "; ".join(problems[:20])
                + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
            )


class FlagCounters:
    """/metrics: answers outside the contract or out of distribution, and what became of their
    log records (written, or dropped: a full queue or disk costs records, never answers)."""

    def __init__(self) -> None:
        # Imported here: BentoML sets the multiprocess metrics folder before workers start
        # services, after this module is imported (`bentoml.metrics`' own note).
        from prometheus_client import Counter

        self.flagged = Counter(
            "mlaas_flagged_instances", "Answered instances with a warning, by reason", ["reason"]
        )
        self.log_records = Counter(
            "mlaas_prediction_log_records", "Prediction log records, by outcome", ["outcome"]
        )
        self.exported = LogCounters()

    def count(self, observed: list[Observed], log: LogCounters) -> None:
        contract = sum(item.out_of_contract for item in observed)
        far = sum(item.out_of_distribution for item in observed)
        if contract:
            self.flagged.labels(reason="out_of_contract").inc(contract)
        if far:
            self.flagged.labels(reason="out_of_distribution").inc(far)
        # The writer counts in its own thread; /metrics gets the change since the last request.
        for outcome in LOG_OUTCOMES:
            change = getattr(log, outcome) - getattr(self.exported, outcome)
            if change > 0:
                self.log_records.labels(outcome=outcome).inc(change)
        self.exported = log


LOG_OUTCOMES = ("written", "dropped_queue_full", "dropped_write_error", "dropped_unserialisable")


# A mounted app's routes come before BentoML's own `/` and `/docs.json`, so these replace them.
@info_app.get("/", include_in_schema=False, response_class=HTMLResponse)
def show_api_page() -> str:
    return api_page(ModelService.name)  # type: ignore[attr-defined]


@info_app.get("/docs.json", include_in_schema=False)
def describe_api() -> dict[str, Any]:
    return with_required_bodies(ModelService.openapi_spec.asdict())  # type: ignore[attr-defined]


# Outermost first: a request without the key learns nothing, not even the size limit. (The
# decorator returns a bentoml Service, which the type checker does not see.)
ModelService.add_asgi_middleware(ApiKeyGate)  # type: ignore[attr-defined]
ModelService.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestLimits, max_bytes=serving.serve.max_request_bytes
)
ModelService.add_asgi_middleware(ReadableErrors)  # type: ignore[attr-defined]
# Innermost: a body it does not take goes on to BentoML's route, and a refusal from either
# passes ReadableErrors on its way out.
array_spec = family.array_instances(card)
if array_spec is not None:
    ModelService.add_asgi_middleware(  # type: ignore[attr-defined]
        LeanPredict,
        read=functools.partial(
            read_array_instances, spec=array_spec, max_instances=serving.serve.max_instances
        ),
        service=bentoml.get_current_service,
        server_name=ModelService.name,  # type: ignore[attr-defined]
    )
