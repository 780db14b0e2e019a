"""Property-based fuzzing of each served OpenAPI schema with schemathesis (`st run`), against
real servers on loopback: an image, a tabular, a text and a recommendation model.

Bounded and seeded: MLAAS_FUZZ_EXAMPLES examples per operation (default 25), seed 5. A bigger
run, for `make reliability`: MLAAS_FUZZ_EXAMPLES=500 pytest -m slow tests/e2e/test_fuzz.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.conftest import FAMILY_PIPELINES

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("MLAAS_FUZZ_EXAMPLES", "25"))
CHECKS = [
    "not_a_server_error",  # no 5xx, whatever comes in
    "status_code_conformance",  # only statuses the page documents
    "content_type_conformance",
    "response_schema_conformance",  # bodies, errors included, as documented
    "response_headers_conformance",
    "negative_data_rejection",  # what the schema forbids gets a 4xx
]
# Not run: positive_data_acceptance. BentoML's page does not mark request bodies as required,
# so an empty POST counts as valid there (the service rightly answers 400: `instances` is
# missing), and ids that fit the schema are not all known to a rating model (400 by design).


def fuzz(base: str, examples: int, *headers: str) -> tuple[int, str]:
    """`st run` against one server; the number of test cases it sent, and its report."""
    st = str(Path(sys.executable).parent / "st")
    command = [st, "run", f"{base}/docs.json", "--checks", ",".join(CHECKS)]
    command += ["--max-examples", str(examples), "--seed", "5", "--mode", "all"]
    command += ["--phases", "examples,coverage,fuzzing", "--request-timeout", "30"]
    command += ["--no-color", "--generation-database", "none", "--continue-on-failure"]
    # How fast Hypothesis makes examples depends on how busy the machine is, not on the server
    # (`too_slow` failed a run on a machine loaded by other work): only the server is judged.
    command += ["--suppress-health-check", "too_slow"]
    for header in headers:
        command += ["--header", header]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    cases = re.search(r"(\d+) generated", result.stdout)
    assert result.returncode == 0 and cases, result.stdout[-6000:] + result.stderr[-2000:]
    return int(cases.group(1)), result.stdout


PIPELINES = ["digits", *FAMILY_PIPELINES]


@pytest.fixture(scope="module")
def fuzzed(family_servers: dict[str, str]) -> dict[str, Future[tuple[int, str]]]:
    """Every server fuzzed at once: each `st run` is one client waiting on one server, so
    side by side they share the cores instead of taking turns."""
    with ThreadPoolExecutor(len(PIPELINES)) as pool:
        return {name: pool.submit(fuzz, family_servers[name], EXAMPLES) for name in PIPELINES}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_fuzzed_requests_get_no_5xx_and_documented_answers(
    fuzzed: dict[str, Future[tuple[int, str]]], pipeline: str
) -> None:
    cases, report = fuzzed[pipeline].result()  # raises what `fuzz` found for this server
    operations = int(re.search(r"Tested: (\d+)", report).group(1))  # type: ignore[union-attr]
    print(f"{pipeline}: {operations} operations, {cases} cases, 0 failures")
    # /predict, /model, /metrics, the three health checks (and /recommend for a recommender).
    assert operations >= 6 and cases >= operations * 2
