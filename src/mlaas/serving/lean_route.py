"""/predict past BentoML's request handling, for a body that is plain arrays of numbers.

BentoML answers a request through its router, its request context and its API handler, which
parses the body into the API's pydantic model and serialises the answer through another: in a
profile of the MNIST server under 64 connections, a fifth of the worker's CPU. For the body an
image model is mostly sent, `{"instances": <nested arrays of numbers>}` and nothing else, this
middleware reads it with orjson, checks shape, count and range with numpy in one pass, asks the
service for its answer (the same call BentoML's route makes) and writes it as it is.

Any other body, and one that fails a check, goes on to BentoML's route unchanged, which refuses
it naming the field: a refusal reads the same whichever way the request came, and the OpenAPI
page still documents the route. The middleware sits inside the API key gate, the size limits
and BentoML's metrics, tracing, access log and timeout, which see every request as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np
import orjson
from bentoml.exceptions import BentoMLException
from starlette.datastructures import Headers

from mlaas.families.base import ArrayInstances
from mlaas.serving.gateway import App, Message, Receive, Scope, Send, error_response, replay
from mlaas.serving.recording import REQUEST_ID_HEADER

# Everything a JSON body of numbers and arrays may hold after its key: no quotes (strings, other
# keys), no true/false/null. Ends with the object's closing brace.
_NUMBERS_AND_ARRAYS = b"0123456789.eE+-[], \t\r\n"
_KEY = b'"instances"'

_logger = logging.getLogger(__name__)


def read_array_instances(
    body: bytes, spec: ArrayInstances, max_instances: int
) -> list[np.ndarray] | None:
    """The instances of `{"instances": [...]}` when the body is exactly that, with 1 to
    `max_instances` arrays of `spec.shape`, every number finite and in range; None for any other
    body (BentoML's route then validates it and names what is wrong)."""
    head, colon, rest = body.partition(b":")
    if not colon or b"".join(head.split()) != b"{" + _KEY:
        return None
    rest = rest.rstrip()
    if not rest.endswith(b"}") or rest[:-1].translate(None, _NUMBERS_AND_ARRAYS):
        return None
    try:
        # orjson refuses NaN, Infinity and integers past 64 bits: those bodies go the long way.
        instances = orjson.loads(body)["instances"]
        array = np.asarray(instances, dtype=np.float64)
    except (orjson.JSONDecodeError, ValueError, TypeError):  # ragged rows: not an array
        return None
    if array.shape[1:] != spec.shape or not 1 <= len(array) <= max_instances:
        return None
    if not (np.isfinite(array).all() and array.min() >= spec.low and array.max() <= spec.high):
        return None
    return list(array)


class ArrayAnswering(Protocol):
    """The service's side: the answer to validated instances, as JSON bytes."""

    async def respond(self, instances: list[Any], sent_id: str | None) -> tuple[bytes, str]:
        """(the answer's JSON, the request id it carries: the client's `sent_id` if usable)."""
        ...


class LeanPredict:
    """ASGI middleware: answers `POST /predict` itself when `read` takes the body (see module)."""

    def __init__(
        self,
        app: App,
        read: Callable[[bytes], list[Any] | None],
        service: Callable[[], ArrayAnswering | None],
        server_name: str,
        path: str = "/predict",
    ) -> None:
        self.app = app
        self.read = read
        self.service = service
        self.path = path
        self.server = f"BentoML Service/{server_name}".encode()
        self.answered: Any = None  # the counter on /metrics, made with the first answer

    def count_answered(self) -> None:
        if self.answered is None:
            # Made here, not at start-up: BentoML points prometheus_client at its multiprocess
            # folder in each worker, after this module is imported (`bentoml.metrics`' note).
            from prometheus_client import Counter

            self.answered = Counter(
                "mlaas_array_requests",
                "/predict requests answered from a plain-array body, past BentoML's route",
            )
        self.answered.inc()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        messages, body = await _whole_body(receive)
        instances = None if body is None else self.read(body)
        service = self.service() if instances is not None else None
        if instances is None or service is None:
            await self.app(scope, replay(messages, receive), send)
            return
        sent_id = Headers(scope=scope).get(REQUEST_ID_HEADER)
        try:
            answer, request_id = await service.respond(instances, sent_id)
        except BentoMLException as error:
            status = int(error.error_code)
            if status >= 500 and status != 503:
                raise
            _logger.info("POST %s refused with %d: %s", self.path, status, error)
            await error_response(status, str(error))(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                    (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
                    (b"server", self.server),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        self.count_answered()


async def _whole_body(
    receive: Callable[[], Awaitable[Message]],
) -> tuple[list[Message], bytes | None]:
    """The request's messages to the end of its body, and the body; None for the body when the
    client left first (the messages are handed on as they came)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)
