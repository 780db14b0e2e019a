"""The HTTP guards around the served model: ASGI middleware BentoML runs before any API.

    ApiKeyGate      401 without the configured API key (health checks stay open)
    RequestLimits   413 for a body over the size limit, 415 for one that is not JSON, unparsed
    ReadableErrors  every 4xx body as `{"error": "where: what", "errors": [...]}`

Kept apart from the service so the rules read (and are tested) on their own.
"""

from __future__ import annotations

import functools
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse

from mlaas.apikey import read_api_key

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez"})
"""Health checks stay open with a key configured: probes (Kubernetes, load balancers) send none."""

ERRORS_NAMED = 3
"""How many field errors the message names; the `errors` list holds up to ERRORS_LISTED."""
ERRORS_LISTED = 20
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

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
        await refusal(scope, receive, send)


class RequestLimits:
    """ASGI middleware: 413 for a body over `max_bytes`, 415 for one that is not JSON, both
    before the body reaches a parser (BentoML itself sets no limit, and answers 500 to a
    multipart body it cannot parse)."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.refusal(scope["method"], headers)
        if refusal is None and "transfer-encoding" in headers:
            # A chunked body declares no size: read it up to the limit, then hand it on.
            received = await read_at_most(receive, self.max_bytes)
            if received is None:
                refusal = self.too_large()
            else:
                receive = replay(received, receive)
        if refusal is not None:
            await refusal(scope, receive, send)
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


async def read_at_most(receive: Receive, max_bytes: int) -> list[Message] | None:
    """The request's messages up to the end of its body; None once it passes max_bytes."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages
        size += len(message.get("body", b""))
        if size > max_bytes:
            return None
        if not message.get("more_body", False):
            return messages


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
