"""The BentoML service: one packaged pipeline's champion behind a typed HTTP API.

    POST /predict   {"instances": [...]} -> {"predictions": [...], "model": {...}}
    POST /infer     the raw batch endpoint /predict feeds through adaptive batching
    GET  /model     name, version, alias, test metrics and lineage tags of the served model
    /healthz /readyz /livez /metrics, and the OpenAPI page at /

Which pipeline it serves is a Bento argument (`--arg model=NAME`, baked in by `package`). The
request schema follows from the model card, so bad input is refused by validation with a 4xx
that names the field, before any model code runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument
from bentoml.validators import DType, Shape
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from mlaas.bundle import MANIFEST_FILE, MODEL_SUBDIR, read_serving_info, verify_model_dir
from mlaas.errors import NotReady
from mlaas.families import get_family
from mlaas.predictor import Predictor, read_card


class ServiceArguments(BaseModel):
    model: str = "mnist"
    """Name of the pipeline (and BentoML model) to serve."""


arguments = bentoml.use_arguments(ServiceArguments)
bento_model = bentoml.models.BentoModel(f"{arguments.model}:latest")
if bento_model.stored is None:
    raise NotReady(
        f"no packaged model named {arguments.model!r} in the BentoML store: "
        "run the pipeline (`make run`) so its `package` stage builds one"
    )
# The schema of the API is part of the class definition, so it is read here, once.
bundle_dir = Path(bento_model.stored.path)
serving = read_serving_info(bundle_dir)
card = read_card(bundle_dir / MODEL_SUBDIR)
Instance = get_family(card.family).instance_type(card)


class PredictRequest(bentoml.IODescriptor):
    model_config = ConfigDict(extra="forbid")

    instances: Annotated[
        list[Instance],  # type: ignore[valid-type]
        Field(min_length=1, max_length=serving.serve.max_instances),
    ]


class Prediction(BaseModel):
    label: int | str
    probabilities: dict[str, float]


class ServedModel(BaseModel):
    name: str
    version: int
    alias: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: ServedModel


class ModelDescription(ServedModel):
    metrics: dict[str, float]
    tags: dict[str, str]
    manifest: dict[str, Any]


InferBatch = Annotated[np.ndarray, Shape((-1, *card.instance_shape)), DType("float32")]
info_app = FastAPI()


@bentoml.service(name=f"mlaas-{arguments.model}", traffic={"timeout": 30})
@bentoml.asgi_app(info_app, path="/")
class ModelService:
    model = bento_model

    def __init__(self) -> None:
        folder = Path(self.model.path)
        verify_model_dir(folder / MODEL_SUBDIR, serving.model_sha256)
        self.predictor = Predictor.load(folder / MODEL_SUBDIR)
        self.identity = ServedModel(name=serving.name, version=serving.version, alias=serving.alias)
        self.description = ModelDescription(
            **self.identity.model_dump(),
            metrics=serving.metrics,
            tags=serving.tags,
            manifest=json.loads((folder / MANIFEST_FILE).read_text()),
        )

    @info_app.get("/model")
    def describe_model(self) -> ModelDescription:
        return self.description

    @bentoml.api(route="/predict", input_spec=PredictRequest)
    async def predict(self, instances: list[Any]) -> PredictResponse:
        batch = np.asarray(instances, dtype=np.float32)
        # Through the batchable API, so concurrent requests share one forward pass.
        probabilities = await self.to_async.infer(batch)  # type: ignore[attr-defined]
        return PredictResponse(
            predictions=[Prediction(**p) for p in self.predictor.describe(probabilities)],
            model=self.identity,
        )

    @bentoml.api(
        batchable=True,
        max_batch_size=serving.serve.max_batch_size,
        max_latency_ms=serving.serve.max_latency_ms,
    )
    def infer(self, batch: InferBatch) -> np.ndarray:
        if not np.isfinite(batch).all() or batch.min(initial=0) < 0 or batch.max(initial=0) > 255:
            raise InvalidArgument("batch: values must be finite numbers in 0..255")
        return self.predictor.predict_proba(batch)
