"""Where a local search's trials run: threads of one worker in this process for networks (each
trains in a process of its own), worker processes for scikit-learn models (they fit in the
worker)."""

from __future__ import annotations

import os
import threading
import time

from distributed import Client, LocalCluster

from mlaas.core.search_space import TuneSettings
from mlaas.modeling.tuning import dask_cluster_options

TWO_AT_ONCE = TuneSettings(trials=4, parallel=2)


def _where_and_when(_: int) -> tuple[int, int, float, float]:
    started = time.monotonic()
    time.sleep(0.5)
    return os.getpid(), threading.get_ident(), started, time.monotonic()


def test_a_network_searchs_trials_run_two_at_once_on_threads_of_this_process() -> None:
    options = dask_cluster_options(TWO_AT_ONCE, {}, own_training_process=True)
    with LocalCluster(**options) as cluster, Client(cluster) as client:
        first, second = client.gather(client.map(_where_and_when, [0, 1], pure=False))
    assert first[0] == second[0] == os.getpid()
    assert first[1] != second[1]
    assert max(first[2], second[2]) < min(first[3], second[3])  # side by side, not in turn


def test_a_scikit_learn_searchs_trials_get_a_worker_process_each() -> None:
    options = dask_cluster_options(
        TWO_AT_ONCE, {"PREFECT_API_URL": "x"}, own_training_process=False
    )
    assert (options["processes"], options["n_workers"], options["threads_per_worker"]) == (
        True,
        2,
        1,
    )
    assert options["env"] == {"PREFECT_API_URL": "x"}
