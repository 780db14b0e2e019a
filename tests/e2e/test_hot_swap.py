"""Hot swap under load: a real `mlaas serve` follows its pipeline's champion without a restart.

Sixteen clients call /predict while a better version is promoted and packaged; none fails,
each response names a version that was champion, and from the moment one response names the
new version, every request that starts later gets it too. Then the package record is pointed
at a model whose files were changed after packaging, and at one that is not in the store: both
are refused with one log line each, and the new champion keeps serving. Every answer of the
soak is in the prediction log, whose small files rotated many times meanwhile.

The pipeline lives in a workspace of its own (the session's champions are left alone): its
stages run in this process, up to `promote`; `package` runs as `mlaas stage package`, because
BentoML's store is fixed for a process when BentoML is first imported (here, the session's).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import served, shrink, write_params

from mlaas.core.records import Packaged
from mlaas.core.settings import Settings
from mlaas.families.image import table_images
from mlaas.modeling.bundle import MODEL_SUBDIR
from mlaas.stages.table import run_stage
from mlaas.stores.files import read_table
from mlaas.stores.prediction_log import read_predictions
from mlaas.stores.registry import CHAMPION, Registry
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow

NAME = "hot-swap"
POLL_SECONDS = 0.5
CLIENTS = 16
MAX_REQUESTS_PER_CLIENT = 3000
UP_TO_REGISTER = ("load", "validate", "split", "train", "evaluate", "register")
WAIT_SECONDS = 180  # how long to wait for something that should take a few seconds


@dataclass(frozen=True)
class Answer:
    client: int
    started: float
    ended: float
    version: int | None
    error: str | None


def _package(params: Path, home: Path) -> Packaged:
    """`mlaas stage package` in a process whose BentoML store is this workspace's."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlaas"), "stage", "package", "--params", str(params)],
        env={**os.environ, "MLAAS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Packaged.model_validate_json(done.stdout)


def _hammer(
    base: str, client: int, body: str, stop: threading.Event, answers: list[Answer]
) -> None:
    """Sequential /predict calls until told to stop (or a bounded count), each one recorded."""
    with httpx.Client(base_url=base, timeout=60) as http:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            started = time.monotonic()
            version, error = None, None
            try:
                response = http.post(
                    "/predict", content=body, headers={"content-type": "application/json"}
                )
                if response.status_code == 200:
                    version = response.json()["model"]["version"]
                else:
                    error = f"{response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as failure:
                error = repr(failure)
            answers.append(Answer(client, started, time.monotonic(), version, error))


def _wait_until(condition: Any, what: str, log: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, (
            f"{what} within {WAIT_SECONDS} s; log:\n" + (log.read_text()[-3000:])
        )
        time.sleep(0.1)


def _log_lines(log: Path, pattern: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if re.search(pattern, line)]


def test_hot_swap_under_load(
    project_settings: Settings, tmp_path: Path, record_property: Any
) -> None:
    workspace = Workspace(tmp_path / "home")
    serve = {"champion_poll_seconds": POLL_SECONDS}
    # Small log files, so the soak rotates them often; the cap far above what it writes.
    monitor = {"rotate_bytes": 256 * 1024, "max_log_bytes": 1024**3}
    # v1: one epoch at a tiny learning rate; v2: two at the real one, which beats it.
    worse = shrink(
        project_settings,
        NAME,
        train={"max_epochs": 1, "learning_rate": 1e-5},
        serve=serve,
        monitor=monitor,
    )
    better = shrink(project_settings, NAME, train={"max_epochs": 2}, serve=serve, monitor=monitor)
    params = write_params(worse, tmp_path)  # what `package` and `serve` read is the same in both
    for stage in (*UP_TO_REGISTER, "promote"):
        run_stage(stage, worse, workspace)
    first = _package(params, workspace.home)
    for stage in UP_TO_REGISTER:  # v2 is registered; the champion is still v1
        run_stage(stage, better, workspace)
    record = workspace.pipeline(NAME).package_result
    first_record = record.read_text()

    images = table_images(read_table(workspace.pipeline(NAME).split("test"), "split"))
    body = json.dumps({"instances": images[:2, :, :, 0].tolist()})
    log = tmp_path / "serve.log"
    answers: list[Answer] = []
    stop = threading.Event()
    with served(params, workspace, log) as base:
        assert httpx.get(f"{base}/model", timeout=10).json()["version"] == 1
        clients = [
            threading.Thread(target=_hammer, args=(base, n, body, stop, answers), daemon=True)
            for n in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        try:
            _wait_until(lambda: len(answers) >= CLIENTS, "answers from v1 under load", log)
            promotion = run_stage("promote", better, workspace)
            assert promotion.champion.version == 2  # type: ignore[attr-defined]
            second = _package(params, workspace.home)
            assert second.version.version == 2 and second.model_tag != first.model_tag
            packaged_at = record.stat().st_mtime

            def swapped_for_all() -> bool:
                """Every client has sent a request after the first answer from v2."""
                seen = [a.ended for a in list(answers) if a.version == 2]
                return bool(seen) and all(
                    any(a.started > min(seen) for a in list(answers) if a.client == n)
                    for n in range(CLIENTS)
                )

            _wait_until(swapped_for_all, "v2 served to every client", log)
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=120)
        described = httpx.get(f"{base}/model", timeout=10).json()

        # The load: nothing failed, only champions answered, and the swap was clean.
        assert [a.error for a in answers if a.error is not None] == []
        assert {a.version for a in answers} == {1, 2}
        first_from_v2 = min(a.ended for a in answers if a.version == 2)
        late_from_v1 = [a for a in answers if a.version == 1 and a.started > first_from_v2]
        assert late_from_v1 == []  # once v2 has answered, every later request gets v2
        assert (described["version"], described["alias"]) == (2, CHAMPION)
        assert described["metrics"]["test_accuracy"] > 0
        [swap] = _log_lines(log, r"hot swap: serving")
        assert f"serving {second.model_tag} (v2) in place of {first.model_tag} (v1)" in swap
        load_seconds = float(re.findall(r"in ([0-9.]+) s\)", swap)[0])
        # When v2 was first served, from the package record's write (its mtime, so a wall
        # clock): reported, not asserted; the waits above bound it (WAIT_SECONDS).
        wall_of_first_v2 = time.time() - (time.monotonic() - first_from_v2)
        delay = wall_of_first_v2 - packaged_at
        record_property("hot_swap_delay_s", round(delay, 3))
        print(
            f"\nhot swap: v2 answered {delay:.2f} s after its package record was written "
            f"(poll every {POLL_SECONDS} s, load and checks {load_seconds:.2f} s); "
            f"{len(answers)} requests from {CLIENTS} clients, none failed"
        )

        # A package record that names a model whose files changed after packaging (v1's, one
        # byte), then one that names no stored model: each refused once; v2 keeps serving.
        stored = workspace.bentoml_home / "models" / first.model_tag.replace(":", "/")
        weights = next(p for p in sorted((stored / MODEL_SUBDIR).rglob("*.pt")) if p.is_file())
        content = bytearray(weights.read_bytes())
        content[len(content) // 2] ^= 0xFF
        weights.write_bytes(bytes(content))
        record.write_text(first_record)
        _wait_until(lambda: _log_lines(log, f"refused {first.model_tag}"), "a refusal", log)
        missing = f"{NAME}:notpackaged"
        record.write_text(json.dumps({**json.loads(first_record), "model_tag": missing}))
        _wait_until(lambda: _log_lines(log, f"refused {missing}"), "a refusal", log)
        time.sleep(4 * POLL_SECONDS)  # a few more polls of the same record: no more lines
        [tampered] = _log_lines(log, f"refused {first.model_tag}")
        assert "TamperedModel" in tampered and f"still serving {second.model_tag} (v2)" in tampered
        [absent] = _log_lines(log, f"refused {missing}")
        assert "no model" in absent and f"still serving {second.model_tag} (v2)" in absent
        assert httpx.get(f"{base}/model", timeout=10).json()["version"] == 2
        response = httpx.post(
            f"{base}/predict",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert response.status_code == 200 and response.json()["model"]["version"] == 2
    assert Registry(workspace).aliases(NAME)[CHAMPION] == 2

    # The server has stopped, its writer flushed: every instance answered (the soak's and the
    # last request's, two a request) is in the log once, under the version that answered it,
    # across many rotated files.
    predictions = workspace.pipeline(NAME).predictions_dir
    logged = read_predictions(predictions)
    answered = Counter(version for a in answers for version in (a.version, a.version))
    answered[2] += 2
    assert Counter(record.model_version for record in logged) == answered
    assert len({(record.request_id, record.index) for record in logged}) == len(logged)
    assert len(list(predictions.glob("predictions-*.jsonl"))) > 3
