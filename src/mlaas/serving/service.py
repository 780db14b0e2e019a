"""The BentoML service: one packaged pipeline's champion behind a typed HTTP API.

    POST /predict    {"instances": [...]} -> {"predictions": [...], "model": {...}}
    POST /recommend  recommendation models only: {"user_id", "k"} -> the top-k items it has
                     not rated, each with its predicted rating and its count of ratings
    GET  /model      name, version, alias, test metrics and lineage tags of the served model
    /healthz /readyz /livez /metrics, and the OpenAPI page at / (its spec at /docs.json)

With an API key configured (`MLAAS_API_KEY`, or a file named by `MLAAS_API_KEY_FILE`, read when
the server starts), every route but the health checks answers 401 to a request without it.
Bodies over `serve.max_request_bytes` get 413, and bodies that are not JSON 415, before any of
them is parsed.

Which pipeline it serves is a Bento argument (`--arg model=NAME`, baked in by `package`). The
request schema follows from the model card (an image's shape, a table's feature names and
types, a text length limit, user and item ids), so bad input is refused with a 4xx that names
the field before any model code runs. Concurrent /predict requests share model calls through
the in-process micro-batcher (`mlaas.serving.batching`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import bentoml
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from mlaas.core.errors import NotReady
from mlaas.core.tasks import task_of
from mlaas.families import get_family
from mlaas.families.base import InvalidInstance
from mlaas.modeling.bundle import MANIFEST_FILE, MODEL_SUBDIR, read_serving_info, verify_model_dir
from mlaas.modeling.models import load_model, read_card
from mlaas.serving.api_page import api_page, with_required_bodies
from mlaas.serving.batching import MicroBatcher, Overloaded
from mlaas.serving.gateway import (
    ApiKeyGate,
    ReadableErrors,
    RequestLimits,
    log_client_errors_as_one_line,
)


class ServiceArguments(BaseModel):
    model: str = "mnist"
    """Name of the pipeline (and BentoML model) to serve."""
    batching: bool = True
    """Adaptive batching of /predict (`--arg batching=false` answers each request alone)."""


arguments = bentoml.use_arguments(ServiceArguments)
bento_model = bentoml.models.BentoModel(f"{arguments.model}:latest")
if bento_model.stored is None:
    raise NotReady(
        f"no packaged model named {arguments.model!r} in the BentoML store: "
        "run the pipeline (`make run`) so its `package` stage builds one"
    )
# The API's schema is part of the class definition, so the model card is read here, once.
bundle_dir = Path(bento_model.stored.path)
serving = read_serving_info(bundle_dir)
card = read_card(bundle_dir / MODEL_SUBDIR)
family = get_family(card.family)
task = task_of(card)
Instance = family.instance_type(card)
Instances = Annotated[
    list[Instance],  # type: ignore[valid-type]
    Field(min_length=1, max_length=serving.serve.max_instances),
]


class ClassPrediction(BaseModel):
    label: int | str
    probabilities: dict[str, float]


class ValuePrediction(BaseModel):
    value: float


class RatingPrediction(BaseModel):
    rating: float


Prediction = {
    "classification": ClassPrediction,
    "regression": ValuePrediction,
    "rating": RatingPrediction,
}[card.task]


class PredictRequest(bentoml.IODescriptor):
    model_config = ConfigDict(extra="forbid")

    instances: Instances


class ServedModel(BaseModel):
    name: str
    version: int
    alias: str


# Responses are IODescriptors too: for a plain model BentoML derives the media type from a JSON
# schema it rebuilds on every response (about half a millisecond of a 4 ms request).
class PredictResponse(bentoml.IODescriptor):
    predictions: list[Prediction]  # type: ignore[valid-type]
    model: ServedModel


class ModelDescription(ServedModel):
    family: str
    task: str
    metrics: dict[str, float]
    tags: dict[str, str]
    manifest: dict[str, Any]


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


# No FastAPI pages of its own (/docs, /redoc): they load Swagger UI and ReDoc from a CDN, and
# the page at / documents every route, this app's included.
info_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.service(name=f"mlaas-{arguments.model}", traffic={"timeout": 30})
@bentoml.asgi_app(info_app, path="/")
class ModelService:
    bento_model = bento_model

    def __init__(self) -> None:
        log_client_errors_as_one_line()  # in each worker, which is where requests are logged
        folder = Path(self.bento_model.path)
        verify_model_dir(folder / MODEL_SUBDIR, serving.model_sha256)
        self.model = load_model(folder / MODEL_SUBDIR)
        self.identity = ServedModel(name=serving.name, version=serving.version, alias=serving.alias)
        self.description = ModelDescription(
            **self.identity.model_dump(),
            family=card.family,
            task=card.task,
            metrics=serving.metrics,
            tags=serving.tags,
            manifest=json.loads((folder / MANIFEST_FILE).read_text()),
        )
        self.batcher = MicroBatcher(
            self.answer,
            max_batch_size=serving.serve.max_batch_size,
            max_wait_ms=serving.serve.batch_wait_ms,
            max_queued=serving.serve.max_queued_instances,
        )

    @info_app.get("/model")
    def describe_model(self) -> ModelDescription:
        return self.description

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, instances: list[Any]) -> PredictResponse:
        if self.model.checks_input:
            try:
                # Per request, before batching: one bad request must not fail its batch-mates.
                self.model.check(family.instances_to_features(instances, card))
            except InvalidInstance as error:
                raise InvalidArgument(f"instances: {error}") from None
        if not arguments.batching:
            predictions = await anyio.to_thread.run_sync(self.answer, instances)
        else:
            try:
                predictions = await self.batcher.submit(instances)
            except Overloaded as error:
                raise ServiceUnavailable(str(error)) from None
        return PredictResponse(predictions=predictions, model=self.identity)

    def answer(self, instances: list[Any]) -> list[Any]:
        """Predictions for validated instances: the model call both paths share."""
        try:
            outputs = self.model.predict(family.instances_to_features(instances, card))
        except InvalidInstance as error:
            raise InvalidArgument(f"instances: {error}") from None
        return [Prediction(**item) for item in task.describe(outputs, card)]

    if card.task == "rating":

        @bentoml.api(route="/recommend", input_spec=RecommendRequest, output_spec=RecommendResponse)
        def recommend(self, user_id: str, k: int) -> RecommendResponse:
            from mlaas.families.recommendation_ranking import recommend

            recommended = recommend(self.model, str(user_id), k)
            return RecommendResponse(
                user_id=str(user_id),
                items=[RecommendedItem(**asdict(item)) for item in recommended.items],
                fallback=recommended.fallback,
                model=self.identity,
            )


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
