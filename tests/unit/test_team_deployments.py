"""What a team-mode deployment carries for a worker on any machine: the params document, with
the paths inside the project folder relative to it, and no workspace of the stack's machine."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlaas.orchestration.deployments import STACK_QUEUE, deployments_for, portable

PROJECT = Path("/srv/checkout")


def test_paths_inside_the_project_travel_relative_and_others_as_they_are() -> None:
    document = {
        "pipeline": {"name": "p"},
        "load": {"path": "/srv/checkout/data/rows.csv"},
        "package": {"bentofile": "/srv/checkout/bentofile.yaml", "build_context": "/opt/src"},
        "train": {"model": {"name": "logistic_regression"}},
    }
    moved = portable(document, PROJECT)
    assert moved["load"]["path"] == "data/rows.csv"
    assert moved["package"] == {"bentofile": "bentofile.yaml", "build_context": "/opt/src"}
    assert moved["train"] == document["train"]
    assert document["load"]["path"] == "/srv/checkout/data/rows.csv"  # not changed in place


def test_a_team_deployment_carries_the_document_and_the_checks_stay_on_the_stack(
    tmp_path: Path,
) -> None:
    params = tmp_path / "wine.yaml"
    document = {
        "pipeline": {"name": "wine-team", "family": "tabular"},
        "load": {"source": "wine"},
        "train": {"model": {"name": "logistic_regression"}},
    }
    params.write_text(yaml.safe_dump(document))
    home = tmp_path / "home"

    training, check = deployments_for(params, home, work_pool="mlaas")
    assert training.parameters == {"params": document}
    assert training.work_queue_name is None  # the pool's default queue: any machine's worker
    assert check.work_queue_name == STACK_QUEUE
    assert check.parameters == {"params": str(params.resolve()), "home": str(home)}

    single, _ = deployments_for(params, home)
    assert single.parameters == {"params": str(params.resolve()), "home": str(home)}
