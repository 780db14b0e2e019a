"""The servers mlaas is measured against in the peers benchmark (bench/peers.py), as ASGI apps
that uvicorn serves: `python -m uvicorn bench.peer_apps:bare` (or `:handwritten`).

- `bare`: what Python HTTP itself allows: read the body, parse it, answer a constant. No model.
- `handwritten`: what an engineer writes by hand around the registered MLflow model: FastAPI,
  a pydantic body, `mlflow.pyfunc`. The model is `$MLAAS_PEER_MODEL_URI`, loaded at start.
"""

# No `from __future__ import annotations`: FastAPI reads the body's type from the annotation of
# `predict`, which names a class local to `_handwritten`.
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CONSTANT_ANSWER = b'{"predictions":[0]}'


async def bare(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if body:  # a GET (the readiness probe) has none
        json.loads(body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": CONSTANT_ANSWER})


def _handwritten() -> Any:
    import mlflow.pyfunc
    from fastapi import FastAPI
    from pydantic import BaseModel

    model = mlflow.pyfunc.load_model(os.environ["MLAAS_PEER_MODEL_URI"])

    class Request(BaseModel):
        instances: list[Any]

    app = FastAPI()

    @app.post("/predict")
    def predict(request: Request) -> dict[str, Any]:
        return {"predictions": model.predict(request.instances)}

    return app


def __getattr__(name: str) -> Any:
    # Built when uvicorn asks for it, so that importing this module for `bare` loads no model.
    if name == "handwritten":
        return _handwritten()
    raise AttributeError(name)
