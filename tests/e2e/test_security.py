"""Optional API-key authentication of the served endpoint: a real `mlaas serve` with a key set,
every route but the health checks refused without it, and a bad key setting refused at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import served

from mlaas.core.errors import SettingsError
from mlaas.serving.apikey import API_KEY_ENV, API_KEY_FILE_ENV, read_api_key
from mlaas.stores.workspace import Workspace

KEY = "k3y-for-tests-0f9a8b7c6d5e4f3a2b1c"
IMAGE = [[0.0] * 8 for _ in range(8)]
PROTECTED = [
    ("POST", "/predict", {"instances": [IMAGE]}),
    ("GET", "/model", None),
    ("GET", "/metrics", None),
    ("GET", "/", None),
    ("GET", "/docs.json", None),
    ("GET", "/schema.json", None),
    ("GET", "/no-such-route", None),  # 401, not 404: nothing about the server leaks
]
OPEN = ["/healthz", "/readyz", "/livez"]


@pytest.fixture(scope="module")
def server(
    pipeline_run: dict[str, Any],
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("secure") / "serve.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(API_KEY_ENV, KEY)  # `served` passes its environment on to `mlaas serve`
        with served(pipeline_run["params"], session_workspace, log) as base:
            yield base, log


def _call(base: str, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    content = None if body is None else json.dumps(body)
    headers = {"content-type": "application/json", **headers}
    return httpx.request(method, f"{base}{path}", content=content, headers=headers, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_every_route_but_health_needs_the_key(
    server: tuple[str, Path], method: str, path: str, body: Any
) -> None:
    base, _ = server
    for problem, headers in [
        ("missing", {}),
        ("wrong", {"Authorization": "Bearer not-the-key"}),
        ("wrong", {"X-API-Key": KEY[:-1]}),
        ("missing", {"Authorization": f"Basic {KEY}"}),  # only the Bearer scheme carries it
    ]:
        refused = _call(base, method, path, body, headers)
        assert refused.status_code == 401, (headers, refused.status_code)
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"].startswith(f"{problem} API key")
    expected = 404 if path == "/no-such-route" else 200
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        answer = _call(base, method, path, body, headers)
        assert answer.status_code == expected, (headers, answer.text[:300])


@pytest.mark.slow
def test_health_checks_stay_open_and_the_key_is_never_logged(server: tuple[str, Path]) -> None:
    base, log = server
    for path in OPEN:
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, path
    # With a key set, batched /predict works as without one.
    answer = _call(base, "POST", "/predict", {"instances": [IMAGE]}, {"X-API-Key": KEY})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
    assert KEY not in log.read_text()


@pytest.mark.slow
def test_a_bad_key_setting_stops_mlaas_serve_before_it_starts(
    pipeline_run: dict[str, Any], session_workspace: Workspace, tmp_path: Path
) -> None:
    mlaas = str(Path(sys.executable).parent / "mlaas")
    command = [mlaas, "--home", str(session_workspace.home), "serve"]
    command += ["--params", str(pipeline_run["params"]), "--port", "1"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(API_KEY_ENV)}
    missing = tmp_path / "no-such-key"
    result = subprocess.run(
        command,
        env=environment | {API_KEY_FILE_ENV: str(missing)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot read the API key file {API_KEY_FILE_ENV} ({missing})" in result.stderr


def test_the_key_comes_from_the_variable_or_a_file(tmp_path: Path) -> None:
    assert read_api_key({}) is None
    assert read_api_key({API_KEY_ENV: KEY}) == KEY.encode()
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert read_api_key({API_KEY_FILE_ENV: str(key_file)}) == KEY.encode()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({API_KEY_ENV: ""}, "empty"),
        ({API_KEY_ENV: "two words"}, "spaces"),
        ({API_KEY_ENV: "clé"}, "ASCII"),
        ({API_KEY_ENV: KEY, API_KEY_FILE_ENV: "/k"}, "not both"),
        ({API_KEY_FILE_ENV: "/no/such/file"}, "cannot read the API key file"),
    ],
)
def test_a_bad_key_setting_is_an_error_that_says_why(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        read_api_key(environ)


def test_an_empty_or_unreadable_key_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="empty"):
        read_api_key({API_KEY_FILE_ENV: str(empty)})
    with pytest.raises(SettingsError, match="cannot read"):
        read_api_key({API_KEY_FILE_ENV: str(tmp_path)})  # a folder
