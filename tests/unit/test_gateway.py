"""The HTTP guards on their own, driven as ASGI apps: a refused body is read before the answer
(within bounds), BentoML's log of a client's mistake becomes one line, and the served OpenAPI
spec marks request bodies required and its page loads nothing from a third party."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from bentoml.exceptions import InvalidArgument, NotFound

from mlaas.serving.api_page import api_page, with_required_bodies
from mlaas.serving.gateway import (
    ClientErrorsLogged,
    Message,
    RequestLimits,
    log_client_errors_as_one_line,
)

LIMIT = 1024
CHUNK = 4096


class Exchange:
    """One HTTP request played against an ASGI app: its body in chunks, what the app sent, and
    the order in which the app read chunks and sent its answer."""

    def __init__(self, headers: dict[str, str], chunks: int, stall_after: int | None = None):
        self.headers = [(name.encode(), value.encode()) for name, value in headers.items()]
        self.chunks, self.stall_after = chunks, stall_after
        self.read = 0
        self.events: list[str] = []
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.stall_after is not None and self.read >= self.stall_after:
            await asyncio.sleep(3600)  # a client that stops sending, its connection open
        self.read += 1
        self.events.append("read")
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": self.read < self.chunks}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.events.append("answer")
        self.sent.append(message)

    def run(self, guard: Any) -> float:
        scope = {"type": "http", "method": "POST", "path": "/predict", "headers": self.headers}
        started = time.monotonic()
        asyncio.run(guard(scope, self.receive, self.send))
        return time.monotonic() - started

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def closes(self) -> bool:
        return (b"connection", b"close") in self.sent[0]["headers"]


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a refused request reached the app")


def limits(**bounds: Any) -> RequestLimits:
    return RequestLimits(never_called, max_bytes=LIMIT, **bounds)


def declared(size: int, **extra: str) -> dict[str, str]:
    return {"content-type": "application/json", "content-length": str(size), **extra}


def test_an_oversized_body_is_read_to_its_end_before_the_413() -> None:
    exchange = Exchange(declared(10 * CHUNK), chunks=10)
    exchange.run(limits())
    assert exchange.status == 413
    assert exchange.events == ["read"] * 10 + ["answer"]
    assert not exchange.closes  # the whole body was read: the connection can serve again


def test_a_chunked_body_over_the_limit_is_read_to_its_end_before_the_413() -> None:
    exchange = Exchange({"content-type": "application/json", "transfer-encoding": "chunked"}, 10)
    exchange.run(limits())
    assert exchange.status == 413 and exchange.events == ["read"] * 10 + ["answer"]


def test_a_stalled_client_gets_the_413_when_the_time_bound_passes() -> None:
    exchange = Exchange(declared(10 * CHUNK), chunks=10, stall_after=2)
    exchange.run(limits(discard_seconds=0.3))
    assert exchange.status == 413 and exchange.closes
    assert exchange.read == 2  # answered while the client still owed the rest


def test_a_chunked_body_whose_last_chunk_passes_the_limit_is_answered_at_its_end() -> None:
    # The chunk that crosses the limit ends the body; the client then waits for the answer
    # (a real `receive` blocks from here on). Reading on for more would wait for the time bound.
    chunked = {"content-type": "application/json", "transfer-encoding": "chunked"}
    exchange = Exchange(chunked, chunks=1, stall_after=1)
    exchange.run(limits(discard_seconds=30))
    assert exchange.status == 413 and exchange.events == ["read", "answer"]
    assert not exchange.closes


def test_no_more_than_the_byte_bound_is_read() -> None:
    exchange = Exchange({"content-type": "application/json", "transfer-encoding": "chunked"}, 100)
    exchange.run(limits(discard_bytes=5 * CHUNK))
    assert exchange.status == 413 and exchange.closes
    assert exchange.read <= 7  # the chunk over the size limit, then just past the bound


def test_a_declared_body_past_the_byte_bound_is_answered_at_once() -> None:
    exchange = Exchange(declared(100 * CHUNK), chunks=100)
    exchange.run(limits(discard_bytes=5 * CHUNK))
    assert exchange.events == ["answer"] and exchange.closes


def test_a_client_waiting_for_100_continue_is_answered_without_sending_its_body() -> None:
    exchange = Exchange(declared(10 * CHUNK, expect="100-continue"), chunks=10)
    exchange.run(limits())
    assert exchange.status == 413 and exchange.events == ["answer"] and exchange.closes


def test_a_body_that_is_not_json_is_read_before_the_415() -> None:
    exchange = Exchange({"content-type": "text/plain", "content-length": str(CHUNK)}, chunks=1)
    exchange.run(limits())
    assert exchange.status == 415 and exchange.events == ["read", "answer"]


@pytest.fixture
def request_log() -> Iterator[tuple[logging.Logger, list[logging.LogRecord]]]:
    """A logger like BentoML's request-error logger, with the filter on, and what it emitted."""
    logger = logging.getLogger("mlaas-test.http_app")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    log_client_errors_as_one_line(logger.name)
    log_client_errors_as_one_line(logger.name)  # idempotent: one filter, one line
    yield logger, records
    logger.removeHandler(handler)
    logger.filters.clear()


def log_as_bentoml_does(logger: logging.Logger, error: Exception) -> None:
    try:
        raise error
    except Exception:
        logger.error("Exception on %s [%s]", "/predict", "POST", exc_info=True)


class Body(pydantic.BaseModel):
    instances: list[int]


def pydantic_error() -> pydantic.ValidationError:
    try:
        Body.model_validate({"instances": ["a", "b"]})
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("validated")


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (InvalidArgument("instances: unknown item 'z9'\n(not in the training data)"), 400, "z9"),
        (NotFound("no such task"), 404, "no such task"),
        (pydantic_error(), 400, "instances.0: Input should be a valid integer, unable to parse"),
    ],
)
def test_a_client_error_is_one_info_line_without_traceback(
    request_log: tuple[logging.Logger, list[logging.LogRecord]],
    error: Exception,
    status: int,
    reason: str,
) -> None:
    logger, records = request_log
    log_as_bentoml_does(logger, error)
    [record] = records
    assert record.levelno == logging.INFO and record.exc_info is None
    line = logging.Formatter().format(record)
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"POST /predict refused with {status}: ") and reason in line


def test_a_server_fault_stays_an_error_with_its_traceback(
    request_log: tuple[logging.Logger, list[logging.LogRecord]],
) -> None:
    logger, records = request_log
    log_as_bentoml_does(logger, RuntimeError("model file vanished"))
    [record] = records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "Traceback" in logging.Formatter().format(record)
    assert any(isinstance(f, ClientErrorsLogged) for f in logger.filters)


def test_every_request_body_becomes_required_and_the_rest_stays() -> None:
    body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    spec = {
        "openapi": "3.0.2",
        "paths": {
            "/predict": {"post": {"requestBody": body, "responses": {}}},
            "/recommend": {"post": {"requestBody": body, "responses": {}}},
            "/model": {"get": {"responses": {}}},
        },
    }
    fixed = with_required_bodies(spec)
    assert fixed["paths"]["/predict"]["post"]["requestBody"] == {**body, "required": True}
    assert fixed["paths"]["/recommend"]["post"]["requestBody"]["required"] is True
    assert fixed["paths"]["/model"] == spec["paths"]["/model"]
    assert "required" not in body  # the spec it was given is left as it was


def test_the_api_page_loads_only_relative_urls() -> None:
    page = api_page("mlaas-<digits>")
    assert "googletagmanager" not in page and "https://" not in page and "http://" not in page
    assert "<title>mlaas-&lt;digits&gt;</title>" in page
    assert 'validatorUrl: "none"' in page
