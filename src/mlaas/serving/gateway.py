"""The HTTP guards around the served model: ASGI middleware BentoML runs before any API.

    ApiKeyGate      401 without the configured API key (health checks stay open)
    RequestLimits   413 for a body over the size limit, 415 for one that is not JSON, unparsed
    ReadableErrors  every 4xx body as `{"error": "where: what", "errors": [...]}`

and `ClientErrorsLogged`, which turns BentoML's log of a refused request into one line.
Kept apart from the service so the rules read (and are tested) on their own.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import pydantic
from bentoml.exceptions import BentoMLException
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

from mlaas.serving.apikey import read_api_key

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez"})
"""Health checks stay open with a key configured: probes (Kubernetes, load balancers) send none."""

ERRORS_NAMED = 3
"""How many field errors the message names; the `errors` list holds up to ERRORS_LISTED."""
ERRORS_LISTED = 20
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# A refused request's body is read and dropped before the answer goes out, as nginx's lingering
# close does: clients that write the whole body before they read (urllib, requests) meet a
# connection reset otherwise, never the answer. Bounded, so that a client cannot hold the
# connection: 64 MiB (8 times the default size limit) and 10 s (a third of the service's 30 s
# request timeout, which would answer 504 instead). A body past either bound gets its answer
# at once, and the connection is closed after it.
DISCARD_MAX_BYTES = 64 * 2**20
DISCARD_MAX_SECONDS = 10.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@functools.cache
def configured_api_key() -> bytes | None:
    """The server's API key, read from the environment once per worker, when it starts (never
    at build time: the key must not land in the Bento)."""
    return read_api_key(os.environ)


def sent_api_keys(headers: Headers) -> list[bytes]:
    """Keys a request carries, as `Authorization: Bearer KEY` or `X-API-Key: KEY`."""
    keys = [value.encode("latin-1") for value in headers.getlist("x-api-key")]
    for value in headers.getlist("authorization"):
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer":
            keys.append(token.strip().encode("latin-1"))
    return keys


def error_response(status: int, message: str, **headers: str) -> JSONResponse:
    """An error in the shape BentoML's own errors take and its OpenAPI page documents."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ApiKeyGate:
    """ASGI middleware: 401 for any request without the configured API key, but health checks.

    It wraps every route of the server: the APIs, the mounted /model app, /metrics and
    the OpenAPI page. Keys are compared in constant time and never logged."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.key = configured_api_key()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] == "lifespan" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        sent = sent_api_keys(Headers(scope=scope))
        # Every candidate is compared, so timing says nothing about which one came close.
        matches = [hmac.compare_digest(key, self.key) for key in sent]
        if any(matches):
            await self.app(scope, receive, send)
            return
        problem = "wrong API key" if sent else "missing API key"
        refusal = error_response(
            401,
            f"{problem}: send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`",
            **{"WWW-Authenticate": "Bearer"},
        )
        await answer_after_body(refusal, scope, receive, send)


class RequestLimits:
    """ASGI middleware: 413 for a body over `max_bytes`, 415 for one that is not JSON, both
    before the body reaches a parser (BentoML itself sets no limit, and answers 500 to a
    multipart body it cannot parse)."""

    def __init__(
        self,
        app: App,
        max_bytes: int,
        discard_bytes: int = DISCARD_MAX_BYTES,
        discard_seconds: float = DISCARD_MAX_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.discard_bytes = discard_bytes
        self.discard_seconds = discard_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.refusal(scope["method"], headers)
        if refusal is None and "transfer-encoding" in headers:
            # A chunked body declares no size: read it up to the limit, then hand it on.
            received, fits = await read_at_most(receive, self.max_bytes)
            # Handed on either way: a refusal still reads the body to its end, and the message
            # that crossed the limit may have been the last one.
            receive = replay(received, receive)
            if not fits:
                refusal = self.too_large()
        if refusal is not None:
            await answer_after_body(
                refusal, scope, receive, send, self.discard_bytes, self.discard_seconds
            )
            return
        await self.app(scope, receive, send)

    def refusal(self, method: str, headers: Headers) -> JSONResponse | None:
        media_type = headers.get("content-type", "application/json").partition(";")[0]
        if method in BODY_METHODS and media_type.strip().lower() != "application/json":
            return error_response(
                415, f"the body is {media_type!r}: send JSON, with `Content-Type: application/json`"
            )
        declared = headers.get("content-length", "0")
        if not declared.isdigit():
            return error_response(400, f"Content-Length {declared!r} is not a number of bytes")
        return self.too_large() if int(declared) > self.max_bytes else None

    def too_large(self) -> JSONResponse:
        return error_response(
            413,
            f"the body is larger than serve.max_request_bytes ({self.max_bytes} bytes): "
            "send fewer instances per request",
        )


async def read_at_most(receive: Receive, max_bytes: int) -> tuple[list[Message], bool]:
    """The request's messages up to the end of its body, or up to the one that passes
    max_bytes; and whether the body fits in max_bytes."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, True
        size += len(message.get("body", b""))
        if size > max_bytes:
            return messages, False
        if not message.get("more_body", False):
            return messages, True


async def answer_after_body(
    answer: JSONResponse,
    scope: Scope,
    receive: Receive,
    send: Send,
    max_bytes: int = DISCARD_MAX_BYTES,
    max_seconds: float = DISCARD_MAX_SECONDS,
) -> None:
    """Send a refusal once the rest of the request's body is read and dropped, within the
    bounds; past them, or to a client that waits for `100 Continue` (and so sends no body until
    told to), at once, closing the connection after it."""
    if scope["type"] != "http":
        await answer(scope, receive, send)
        return
    headers = Headers(scope=scope)
    declared = headers.get("content-length", "")
    waits_to_send = headers.get("expect", "").lower() == "100-continue"
    too_long = declared.isdigit() and int(declared) > max_bytes
    if waits_to_send or too_long or not await discard_body(receive, max_bytes, max_seconds):
        answer.headers["connection"] = "close"
    await answer(scope, receive, send)


async def discard_body(receive: Receive, max_bytes: int, max_seconds: float) -> bool:
    """Read and drop the request's body to its end; False if it passes `max_bytes` or
    `max_seconds` first, or the client leaves."""
    dropped = 0
    with anyio.move_on_after(max_seconds):
        while dropped <= max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return False
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
    return False


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out the messages already read, then the connection's own."""
    pending = iter(messages)

    async def replayed() -> Message:
        return next(pending, None) or await receive()

    return replayed


class ReadableErrors:
    """ASGI middleware: every 4xx JSON body in the shape BentoML's OpenAPI page documents,
    `{"error": "where: what"}`, plus the first few field errors under `errors`.

    BentoML sends pydantic's whole error list as `detail` where its page promises a string (16k
    bad pixels made a 2 MB answer), and its own errors as a one-item list by mistake."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def send_readable(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and is_json_client_error(message):
                held = message
            elif held is None:
                await send(message)
            else:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = readable_error(b"".join(chunks))
                    headers = MutableHeaders(raw=list(held["headers"]))
                    headers["content-length"] = str(len(body))
                    await send({**held, "headers": headers.raw})
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_readable)


def is_json_client_error(start: Message) -> bool:
    headers = Headers(raw=start["headers"])
    return 400 <= start["status"] < 500 and headers.get("content-type") == "application/json"


def readable_error(body: bytes) -> bytes:
    """BentoML's or FastAPI's error body as `{"error": ..., "errors": [...]}`."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    if not isinstance(payload, dict):
        return body
    detail = payload.get("detail")
    if isinstance(detail, list):  # pydantic's errors, one per field
        errors = [
            {"loc": item.get("loc", []), "msg": item.get("msg", ""), "type": item.get("type", "")}
            for item in detail
            if isinstance(item, dict)
        ]
        problems = [
            f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}" for error in errors
        ]
        more = f" (and {len(problems) - ERRORS_NAMED} more)" if len(problems) > ERRORS_NAMED else ""
        payload = {
            "error": "; ".join(problems[:ERRORS_NAMED]) + more,
            "errors": errors[:ERRORS_LISTED],
        }
    elif "error" not in payload and isinstance(detail, str):
        payload = {"error": detail}
    return json.dumps(payload).encode()


class ClientErrorsLogged(logging.Filter):
    """BentoML logs every refused request as an ERROR with its traceback (82 of them after a
    short fuzz run). On its request logger, this turns a client's mistake (a 4xx) into one
    INFO line, the status and the reason; a server fault stays an ERROR with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = client_error(record.exc_info[1] if record.exc_info else None)
        if refused is not None:
            status, reason = refused
            path, method = record.args if isinstance(record.args, tuple) else ("?", "?")
            record.msg, record.args = "%s %s refused with %d: %s", (method, path, status, reason)
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info = record.exc_text = None
        return True


def client_error(error: BaseException | None) -> tuple[int, str] | None:
    """The status and a one-line reason for an error the client caused; None for any other."""
    if isinstance(error, pydantic.ValidationError):
        first = error.errors(include_url=False, include_context=False, include_input=False)[0]
        where = ".".join(map(str, first["loc"])) or "body"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        return 400, one_line(f"{where}: {first['msg']}{more}")
    if isinstance(error, BentoMLException) and error.error_code < 500:
        return int(error.error_code), one_line(str(error))
    return None


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def log_client_errors_as_one_line(logger_name: str = "bentoml._internal.server.http_app") -> None:
    """Put `ClientErrorsLogged` on BentoML's request-error logger, once per process."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, ClientErrorsLogged) for f in logger.filters):
        logger.addFilter(ClientErrorsLogged())
