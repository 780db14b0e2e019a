"""What outside clients of a real `mlaas serve` met (issue 9): each server's own /metrics, a 413
that urllib, requests, httpx and curl all read, a clear error for a port in use, one log line
per client error, and an API page that is complete offline with its request bodies required."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Running, served

from mlaas.serving.processes import free_port
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow

IMAGE = [[0.0] * 8 for _ in range(8)]
# Six times serve.max_request_bytes (8 MiB): what a client sends that never read the limit.
OVERSIZED = b'{"instances": [' + b" " * 48_000_000 + b"]}"


@pytest.fixture(scope="module")
def two_servers(
    digits_server: Running,
    pipeline_run: dict[str, Any],
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Running, Running]]:
    """Two servers of the same model on two ports, the second started after the first (the
    session's digits server) was up."""
    log = tmp_path_factory.mktemp("serving-fixes") / "second.log"
    with served(pipeline_run["params"], session_workspace, log) as second:
        yield digits_server, Running(second, log)


def _predict(base: str, body: Any) -> httpx.Response:
    return httpx.post(f"{base}/predict", json=body, timeout=60)


def _answered_predictions(base: str) -> float:
    """Successful /predict requests the server's /metrics counts, over all its workers."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "bentoml_service_request"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("endpoint") == "/predict"
        and sample.labels.get("http_response_code") == "200"
    )


def test_each_server_counts_only_its_own_requests(two_servers: tuple[Running, Running]) -> None:
    first, second = two_servers
    before = _answered_predictions(first.url), _answered_predictions(second.url)
    for _ in range(3):
        assert _predict(first.url, {"instances": [IMAGE]}).status_code == 200
    assert _predict(second.url, {"instances": [IMAGE]}).status_code == 200
    after = _answered_predictions(first.url), _answered_predictions(second.url)
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)


def _urllib_post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _requests_post(url: str, body: bytes) -> tuple[int, bytes]:
    answer = requests.post(
        url, data=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    return answer.status_code, answer.content


def _requests_chunked_post(url: str, body: bytes) -> tuple[int, bytes]:
    step = 1 << 20
    chunks = (body[start : start + step] for start in range(0, len(body), step))
    answer = requests.post(
        url, data=chunks, headers={"Content-Type": "application/json"}, timeout=120
    )
    return answer.status_code, answer.content


def _httpx_post(url: str, body: bytes) -> tuple[int, bytes]:
    answer = httpx.post(
        url, content=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    return answer.status_code, answer.content


def _curl_post(url: str, body: bytes, folder: Path) -> tuple[int, bytes]:
    (folder / "body.json").write_bytes(body)
    command = ["curl", "-sS", "-o", str(folder / "answer"), "-w", "%{http_code}"]
    command += ["-H", "Content-Type: application/json", "--data-binary", "@body.json", url]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout), (folder / "answer").read_bytes()


CLIENTS = {
    "urllib": _urllib_post,
    "requests": _requests_post,
    "requests-chunked": _requests_chunked_post,
    "httpx": _httpx_post,
}


@pytest.mark.parametrize("client", [*CLIENTS, "curl"])
def test_clients_that_send_the_whole_oversized_body_read_the_413(
    two_servers: tuple[Running, Running], client: str, tmp_path: Path
) -> None:
    url = f"{two_servers[0].url}/predict"
    if client == "curl":
        status, body = _curl_post(url, OVERSIZED, tmp_path)
    else:
        status, body = CLIENTS[client](url, OVERSIZED)
    assert status == 413, body[:300]
    assert "serve.max_request_bytes" in json.loads(body)["error"]
    assert _predict(two_servers[0].url, {"instances": [IMAGE]}).status_code == 200


def test_a_client_error_is_one_line_in_the_log(two_servers: tuple[Running, Running]) -> None:
    running = two_servers[1]
    marker = "no-such-field-for-the-log-test"
    refused = _predict(running.url, {"instances": [IMAGE], marker: 1})
    assert refused.status_code == 400
    assert _predict(running.url, {"instances": [IMAGE]}).status_code == 200  # the log is flushed
    log = running.log.read_text()
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) == 1 and re.search(r"\bINFO\b", lines[0]), lines


def test_a_port_in_use_is_a_clear_error(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        mlaas = str(Path(sys.executable).parent / "mlaas")
        done = subprocess.run(
            [mlaas, "serve", "--params", str(pipeline_run["params"]), "--port", str(port)],
            env={**os.environ, **session_workspace.environment()},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"port {port}" in done.stderr and "--port" in done.stderr, done.stderr


def test_every_request_body_in_the_openapi_page_is_required(
    two_servers: tuple[Running, Running],
) -> None:
    spec = httpx.get(f"{two_servers[0].url}/docs.json", timeout=10).json()
    bodies = {
        (path, method): operation["requestBody"]
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "requestBody" in operation
    }
    assert ("/predict", "post") in bodies
    assert all(body.get("required") is True for body in bodies.values()), bodies.keys()


class LoadedResources(HTMLParser):
    """What a browser fetches to show a page: scripts, styles, icons, images, frames."""

    LOADING = frozenset({("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")})

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if (tag, name) in self.LOADING and value]


def test_the_api_page_loads_only_from_the_server(two_servers: tuple[Running, Running]) -> None:
    base = two_servers[0].url
    page = httpx.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    parser = LoadedResources()
    parser.feed(page.text)
    assert parser.urls, page.text[:500]
    for url in parser.urls:
        absolute = urljoin(f"{base}/", url)
        assert urlsplit(absolute).netloc == urlsplit(base).netloc, url
        assert httpx.get(absolute, timeout=10).status_code == 200, url
    assert "googletagmanager" not in page.text
    # Swagger UI shows a badge image from validator.swagger.io unless told not to.
    assert re.search(r"""validatorUrl:\s*["']none["']""", page.text), page.text[-1500:]
    # FastAPI's own pages load Swagger UI and ReDoc from a CDN: the service must not offer them.
    for path in ("/docs", "/redoc"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 404, path
