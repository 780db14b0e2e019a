"""The hot swap's parts without a server: the watcher on real packaged folders (a tiny tabular
model) and a real package record, the API contract, and batchers that let a replaced model go."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlaas.core.errors import NotReady
from mlaas.core.lineage import directory_hash
from mlaas.core.model_settings import LogisticRegressionSettings
from mlaas.core.records import ModelVersionRef, Packaged
from mlaas.core.settings import LoadSettings, ServeSettings, TrainSettings
from mlaas.families.tabular import TabularFamily
from mlaas.modeling.bundle import MANIFEST_FILE, MODEL_SUBDIR, SERVING_FILE, ServingInfo
from mlaas.modeling.fitting import fit_model
from mlaas.serving.batching import MicroBatcher
from mlaas.serving.hot_swap import (
    LOG,
    ChampionWatcher,
    LoadedModel,
    api_contract,
    contract_change,
    load_state,
)
from mlaas.serving.observation import Watch
from mlaas.stores.bento_store import stored_model_folder
from mlaas.stores.files import write_json

NAME = "shop"
family = TabularFamily()


def _load_settings(folder: Path, features: list[str]) -> LoadSettings:
    rng = np.random.default_rng(0)
    size = rng.normal(50, 10, 120)
    colour = rng.choice(["red", "green", "blue"], 120)
    path = folder / "shop.csv"
    pd.DataFrame(
        {"size": size, "colour": colour, "expensive": np.where(size > 50, "yes", "no")}
    ).to_csv(path, index=False)
    return LoadSettings(source=None, path=path, target="expensive", features=features)


def _trained(folder: Path, features: list[str]) -> LoadedModel:
    load = _load_settings(folder, features)
    table = family.load(load)
    card = family.model_card(table, load, LogisticRegressionSettings())
    cfg = TrainSettings(model=LogisticRegressionSettings(), accelerator="cpu")
    model, _ = fit_model(family, card, table.slice(0, 100), table.slice(100), cfg, folder / "ck")
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    """The same kind of model twice, and one that takes another set of features."""
    folder = tmp_path_factory.mktemp("models")
    return {
        "size_and_colour": _trained(folder, ["size", "colour"]),
        "size_only": _trained(folder, ["size"]),
    }


def _package(
    store: Path, model: LoadedModel, version: int, serve: ServeSettings | None = None
) -> str:
    """A model folder laid out as `package` writes one; returns its tag."""
    tag = f"{NAME}:v{version}"
    folder = store / tag.replace(":", "/")
    model.save(folder / MODEL_SUBDIR)
    info = ServingInfo(
        name=NAME,
        version=version,
        alias="champion",
        model_sha256=directory_hash(folder / MODEL_SUBDIR),
        serve=serve or ServeSettings(),
        metrics={"test_accuracy": 0.5 + version / 100},
        tags={"mlaas.dataset": "shop"},
    )
    (folder / SERVING_FILE).write_text(info.model_dump_json())
    (folder / MANIFEST_FILE).write_text("{}")
    return tag


def _record(path: Path, tag: str, version: int) -> None:
    ref = ModelVersionRef(name=NAME, version=version, run_id="r", model_uri="models:/shop/1")
    packaged = Packaged(version=ref, model_tag=tag, bento_tag=f"{tag}-bento", newly_built=True)
    write_json(packaged, path)


def _answer(model: LoadedModel, watch: Watch, instances: list[Any]) -> list[Any]:
    return [float(row[0]) for row in model.predict(pd.DataFrame(instances))]


class Setup:
    """A store with v1 packaged, a watcher serving it, and the package record it reads."""

    def __init__(self, tmp_path: Path, models: dict[str, LoadedModel]) -> None:
        self.store = tmp_path / "models"
        self.models = models
        self.record = tmp_path / "package" / "package.json"
        first = _package(self.store, models["size_and_colour"], 1)
        self.watcher = ChampionWatcher(
            load_state(self.folder(first), first, _answer),
            record=self.record,
            locate=self.folder,
            answer=_answer,
        )

    def folder(self, tag: str) -> Path:
        return self.store / tag.replace(":", "/")

    def publish(self, version: int, model: str = "size_and_colour", **serve: Any) -> str:
        tag = _package(self.store, self.models[model], version, ServeSettings(**serve))
        _record(self.record, tag, version)
        return tag


@pytest.fixture
def setup(tmp_path: Path, models: dict[str, LoadedModel]) -> Setup:
    return Setup(tmp_path, models)


def _hot_swap_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG.name]


def test_a_newly_packaged_tag_is_served_from_the_next_poll(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    setup.watcher.poll()  # no record yet: nothing to follow
    first = setup.watcher.current
    assert first.identity.version == 1

    second = setup.publish(2)
    setup.watcher.poll()
    served = setup.watcher.current
    assert (served.tag, served.identity.version, served.description.version) == (second, 2, 2)
    assert served.description.metrics == {"test_accuracy": 0.52}
    assert served.batcher is not first.batcher  # a batch never mixes two models
    # The state a request read before the swap is untouched: it finishes on v1.
    assert (first.identity.version, first.description.version) == (1, 1)
    [line] = _hot_swap_lines(caplog)
    assert f"serving {second} (v2) in place of {NAME}:v1 (v1)" in line

    setup.watcher.poll()  # the record still names the served model: nothing happens
    assert setup.watcher.current is served and len(_hot_swap_lines(caplog)) == 1


def test_tampered_files_are_refused_once_and_the_old_model_keeps_serving(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    tag = _package(setup.store, setup.models["size_and_colour"], 2)
    weights = next(p for p in sorted((setup.folder(tag) / MODEL_SUBDIR).rglob("*")) if p.is_file())
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0xFF
    weights.write_bytes(bytes(content))
    _record(setup.record, tag, 2)
    served = setup.watcher.current
    for _ in range(3):
        setup.watcher.poll()
    assert setup.watcher.current is served
    [line] = _hot_swap_lines(caplog)
    assert f"refused {tag}" in line and "TamperedModel" in line and "hash" in line
    assert f"still serving {NAME}:v1 (v1)" in line
    assert "TamperedModel" in setup.watcher.refused[tag]

    # The next champion is followed as usual.
    third = setup.publish(3)
    setup.watcher.poll()
    assert setup.watcher.current.tag == third


def test_a_tag_missing_from_the_store_is_refused(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    _record(setup.record, f"{NAME}:gone", 2)
    setup.watcher.locate = lambda tag: stored_model_folder(setup.store.parent / "bentoml", tag)
    setup.watcher.poll()
    setup.watcher.poll()
    assert setup.watcher.current.identity.version == 1
    [line] = _hot_swap_lines(caplog)
    assert f"refused {NAME}:gone" in line and "NotReady" in line and "no model" in line


def test_stored_model_folder_names_the_tag_it_cannot_find(tmp_path: Path) -> None:
    with pytest.raises(NotReady, match=r"no model 'shop:gone' in the BentoML store"):
        stored_model_folder(tmp_path, "shop:gone")


@pytest.mark.parametrize(
    ("model", "serve", "named"),
    [
        ("size_only", {}, "instance_schema"),
        ("size_and_colour", {"max_instances": 8}, "max_instances 256 -> 8"),
    ],
)
def test_a_model_that_changes_the_api_is_refused_until_a_restart(
    setup: Setup,
    caplog: pytest.LogCaptureFixture,
    model: str,
    serve: dict[str, Any],
    named: str,
) -> None:
    tag = setup.publish(2, model, **serve)
    setup.watcher.poll()
    assert setup.watcher.current.identity.version == 1
    [line] = _hot_swap_lines(caplog)
    assert f"refused {tag}" in line and named in line and "restart the server" in line


def test_settings_that_do_not_shape_the_api_follow_the_new_model(setup: Setup) -> None:
    setup.publish(2, max_batch_size=4, batch_wait_ms=2.0)
    setup.watcher.poll()
    batcher = setup.watcher.current.batcher
    assert (batcher.max_batch_size, batcher.max_wait) == (4, 0.002)


def test_contract_change_names_each_changed_part(models: dict[str, LoadedModel]) -> None:
    both, size = (models[k].card for k in ("size_and_colour", "size_only"))
    running = api_contract(both, ServeSettings())
    assert contract_change(running, api_contract(both, ServeSettings())) is None
    change = contract_change(running, api_contract(size, ServeSettings(max_request_bytes=4096)))
    assert change is not None
    assert "instance_schema, max_request_bytes 8388608 -> 4096" in change


def test_a_half_written_record_is_read_again_and_logged_once_if_it_stays_broken(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.record.parent.mkdir(parents=True)
    setup.record.write_text('{"model_tag": "sh')
    setup.watcher.poll()  # a write in progress, maybe: not worth a line yet
    assert _hot_swap_lines(caplog) == []
    setup.watcher.poll()
    setup.watcher.poll()
    [line] = _hot_swap_lines(caplog)
    assert f"cannot read the package record {setup.record}" in line and "still serving" in line
    second = setup.publish(2)
    setup.watcher.poll()
    assert setup.watcher.current.tag == second


def test_the_watcher_thread_follows_the_record_until_stopped(setup: Setup) -> None:
    second = setup.publish(2)
    setup.watcher.start(interval=0.05)
    try:
        for _ in range(200):
            if setup.watcher.current.tag == second:
                break
            time.sleep(0.05)
        assert setup.watcher.current.tag == second
    finally:
        setup.watcher.stop()
    time.sleep(0.1)  # a poll under way when it was stopped ends
    setup.publish(3)
    time.sleep(0.3)
    assert setup.watcher.current.tag == second


def test_an_idle_batcher_holds_no_task_so_a_replaced_model_goes_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Model:
        def predict(self, items: list[int]) -> list[int]:
            return [2 * item for item in items]

    async def serve_then_drop() -> tuple[list[int], weakref.ref[Model]]:
        model = Model()
        batcher: MicroBatcher[int, int] = MicroBatcher(model.predict, max_batch_size=4)
        answers = await asyncio.gather(batcher.submit([1, 2]), batcher.submit([3]))
        gone = weakref.ref(model)
        del model, batcher  # what a swap does to the old state, while the loop serves on
        gc.collect()
        return [x for answer in answers for x in answer], gone

    answers, gone = asyncio.run(serve_then_drop())
    assert answers == [2, 4, 6]
    assert gone() is None
    # A worker left waiting would be destroyed pending, which asyncio logs as an error.
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
