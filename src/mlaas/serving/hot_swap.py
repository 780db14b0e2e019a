"""Hot swap: a model server follows its pipeline's champion without a restart.

Every champion move (a scheduled or API run, a promotion, a rollback) ends with the `package`
stage, whose last write is the pipeline's package record naming the new BentoML model. The
server's watcher thread reads that record every `serve.champion_poll_seconds`; on a tag it is
not serving, it loads that model in the background, checks its files against their registered
hash and checks that it fits the API the server was started with, then swaps it in with one
reference assignment. A request reads the served state once and uses it throughout, so requests
in flight finish on the old model and every later one gets the new one; each state has its own
micro-batcher, so no batch mixes two models. A model that fails a check is refused, logged once,
and the old one keeps serving.

Free of BentoML imports: the service passes in how a tag is found and how a batch is answered.
Models (and torch) are loaded in `load_state` only: the server's leader process imports this
module for its types and serves nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import BaseModel, TypeAdapter, ValidationError

from mlaas.core.model_card import ModelCard
from mlaas.core.records import Packaged
from mlaas.core.settings import ServeSettings
from mlaas.families import get_family
from mlaas.modeling.bundle import (
    MANIFEST_FILE,
    MODEL_SUBDIR,
    ServingInfo,
    read_serving_info,
    verify_model_dir,
)
from mlaas.modeling.reference import read_reference
from mlaas.serving.batching import MicroBatcher
from mlaas.serving.observation import Watch, watch_of
from mlaas.serving.polling import start_polling

if TYPE_CHECKING:
    from mlaas.modeling.models import NetworkModel, PipelineModel

LOG = logging.getLogger(__name__)

LoadedModel: TypeAlias = "NetworkModel | PipelineModel"
Answer = Callable[[LoadedModel, Watch, list[Any]], list[Any]]
"""Observed predictions of a model for validated instances (the service's one model call)."""


class ServedModel(BaseModel):
    name: str
    version: int
    alias: str


class ModelDescription(ServedModel):
    family: str
    task: str
    metrics: dict[str, float]
    tags: dict[str, str]
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ApiContract:
    """What the server's API was built from at start-up; a model must match it to be served."""

    family: str
    task: str
    instance_schema: str
    """The JSON schema of one instance, as text (so that two contracts compare)."""
    max_instances: int
    max_request_bytes: int


def api_contract(card: ModelCard, serve: ServeSettings) -> ApiContract:
    schema = TypeAdapter(get_family(card.family).instance_type(card)).json_schema()
    return ApiContract(
        family=card.family,
        task=card.task,
        instance_schema=json.dumps(schema, sort_keys=True),
        max_instances=serve.max_instances,
        max_request_bytes=serve.max_request_bytes,
    )


def contract_change(running: ApiContract, candidate: ApiContract) -> str | None:
    """Why `candidate` cannot be served by an API built for `running`; None when it can."""
    changed = [
        field.name if field.name == "instance_schema" else _shown_change(field.name, was, now)
        for field in fields(ApiContract)
        if (was := getattr(running, field.name)) != (now := getattr(candidate, field.name))
    ]
    if not changed:
        return None
    return (
        f"it changes the API this server was started with ({', '.join(changed)}), and the API "
        "is fixed at start-up: restart the server to serve it"
    )


def _shown_change(name: str, was: object, now: object) -> str:
    return f"{name} {was!r} -> {now!r}"


@dataclass(frozen=True)
class ServedState:
    """One packaged model as served: read once per request, replaced whole by a swap."""

    tag: str
    model: LoadedModel
    card: ModelCard
    info: ServingInfo
    identity: ServedModel
    description: ModelDescription
    contract: ApiContract
    watch: Watch
    batcher: MicroBatcher[Any, Any]

    @property
    def shown(self) -> str:
        return f"{self.tag} (v{self.identity.version})"


def load_state(folder: Path, tag: str, answer: Answer) -> ServedState:
    """The packaged model in `folder` (a BentoML model folder), hash-checked and loaded."""
    from mlaas.modeling.models import load_model

    info = read_serving_info(folder)
    verify_model_dir(folder / MODEL_SUBDIR, info.model_sha256)
    model = load_model(folder / MODEL_SUBDIR)
    identity = ServedModel(name=info.name, version=info.version, alias=info.alias)
    description = ModelDescription(
        **identity.model_dump(),
        family=model.card.family,
        task=model.card.task,
        metrics=info.metrics,
        tags=info.tags,
        manifest=json.loads((folder / MANIFEST_FILE).read_text()),
    )
    watch = watch_of(read_reference(folder / MODEL_SUBDIR), info.serve)
    batcher: MicroBatcher[Any, Any] = MicroBatcher(
        partial(answer, model, watch),
        max_batch_size=info.serve.max_batch_size,
        max_wait_ms=info.serve.batch_wait_ms,
        max_queued=info.serve.max_queued_instances,
    )
    return ServedState(
        tag=tag,
        model=model,
        card=model.card,
        info=info,
        identity=identity,
        description=description,
        contract=api_contract(model.card, info.serve),
        watch=watch,
        batcher=batcher,
    )


def packaged_tag(record: Path) -> str | None:
    """The BentoML model the package record names; None while there is no record."""
    try:
        text = record.read_text()
    except FileNotFoundError:
        return None
    return Packaged.model_validate_json(text).model_tag


class ChampionWatcher:
    """Holds the served state, and keeps it the model the package record names."""

    def __init__(
        self,
        current: ServedState,
        record: Path,
        locate: Callable[[str], Path],
        answer: Answer,
        log: logging.Logger = LOG,
    ) -> None:
        self.current = current
        self.record = record
        self.locate = locate
        """The folder of a BentoML model tag (in the store the pipeline packages into)."""
        self.answer = answer
        self.log = log
        self.refused: dict[str, str] = {}
        """Tags refused, with the reason: each is logged once, not on every poll."""
        self._failed_reads = 0
        self._stop = threading.Event()

    def poll(self) -> None:
        """One look at the package record: swap in the model it names, or refuse it."""
        tag = self._read_record()
        if tag is None or tag == self.current.tag or tag in self.refused:
            return
        started = time.monotonic()
        try:
            candidate = load_state(self.locate(tag), tag, self.answer)
        except Exception as error:  # whatever breaks, the old model keeps serving
            self._refuse(tag, f"{type(error).__name__}: {error}")
            return
        change = contract_change(self.current.contract, candidate.contract)
        if change is not None:
            self._refuse(tag, change)
            return
        previous, self.current = self.current, candidate
        self.log.info(
            "hot swap: serving %s in place of %s (loaded and checked in %.2f s)",
            candidate.shown,
            previous.shown,
            time.monotonic() - started,
        )

    def _read_record(self) -> str | None:
        try:
            tag = packaged_tag(self.record)
        except (OSError, ValidationError) as error:
            # Records are renamed into place whole, but one from a writer that died midway (or
            # a file system that does not rename atomically) may be cut short: only a second
            # failure in a row is worth a line, and one line is enough.
            self._failed_reads += 1
            if self._failed_reads == 2:
                self.log.warning(
                    "hot swap: cannot read the package record %s (%s); still serving %s",
                    self.record,
                    " ".join(str(error).split()),
                    self.current.shown,
                )
            return None
        self._failed_reads = 0
        return tag

    def _refuse(self, tag: str, reason: str) -> None:
        self.refused[tag] = reason
        self.log.warning(
            "hot swap: refused %s, named by %s: %s; still serving %s",
            tag,
            self.record,
            reason,
            self.current.shown,
        )

    def start(self, interval: float) -> None:
        """Poll every `interval` seconds in a daemon thread (0: never)."""
        start_polling(self.poll, interval, self._stop, self.log, "champion-watcher")

    def stop(self) -> None:
        self._stop.set()
