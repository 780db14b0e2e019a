"""The server's side of the prediction log: request ids, records of answers, and feedback.

Each answered request gets an id (the client's `X-Request-ID` when it sends a usable one), which
the response carries in its body and header. Its instances go to the prediction log as records
(`mlaas.stores.prediction_log`): handed to a background writer, so logging costs the request a
list append, and a log that cannot be written loses records (counted in /metrics), never
answers. `POST /feedback` names a request id (and the instance's index in it) with the true
label; the id must be one this pipeline answered, found among this process's recent answers or
in the log files (another worker's, or before a restart).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from mlaas.core.model_card import ModelCard
from mlaas.core.settings import MonitorSettings
from mlaas.serving.observation import Observed
from mlaas.stores.prediction_log import (
    FeedbackLog,
    FeedbackRecord,
    LogLimits,
    PredictionLogWriter,
    PredictionRecord,
    find_prediction,
)

REQUEST_ID_HEADER = "X-Request-ID"
_USABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
RECENT_REQUESTS = 100_000
"""Request ids each process remembers, so that feedback on a fresh answer needs no file read."""
MAX_FEEDBACK_ITEMS = 10_000


def request_id_from(sent: str | None) -> str:
    """The client's id when it is a usable one (letters, digits, `._:-`, at most 128), else new."""
    if sent is not None and _USABLE_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128, description="a /predict request_id")
    index: int = Field(0, ge=0, strict=True, description="the instance's position in that request")
    label: JsonValue = Field(
        description="the true outcome: one of the model's classes (as /predict names them), "
        "or the true value or rating"
    )


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)


class FeedbackAccepted(BaseModel):
    recorded: int


class ErrorBody(BaseModel):
    """A refusal, as every 4xx of the server reads (`mlaas.serving.gateway.ReadableErrors`)."""

    error: str
    errors: list[dict[str, Any]] | None = None


FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a label that is not one of the model's"},
    404: {"model": ErrorBody, "description": "no answered instance with that id and index"},
    422: {"model": ErrorBody, "description": "a body that is not feedback"},
}


class FeedbackRefused(ValueError):
    """Feedback that cannot be recorded: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def label_problem(label: JsonValue, card: ModelCard) -> str | None:
    """Why `label` is not a true outcome for this model; None when it is."""
    if card.task != "classification":
        if (
            isinstance(label, bool)
            or not isinstance(label, int | float)
            or not math.isfinite(label)
        ):
            return f"{label!r} is not a number; this model predicts a {card.task} value"
        return None
    classes = card.labels
    if label in classes and type(label) in {type(known) for known in classes}:
        return None
    kinds = sorted({"integers" if isinstance(c, int) else "strings" for c in classes})
    shown = ", ".join(repr(c) for c in classes[:10]) + (" …" if len(classes) > 10 else "")
    return f"{label!r} is not one of this model's classes ({' and '.join(kinds)}: {shown})"


@dataclass
class Recorder:
    """Records a pipeline's answers and their feedback, for one server process."""

    predictions: Path
    feedback: Path
    monitor: MonitorSettings

    def __post_init__(self) -> None:
        self.writer = PredictionLogWriter(
            self.predictions,
            LogLimits(
                rotate_bytes=self.monitor.rotate_bytes,
                rotate_seconds=self.monitor.rotate_seconds,
                max_total_bytes=self.monitor.max_log_bytes,
                sample_share=self.monitor.sample_share,
            ),
        )
        self.feedback_log = FeedbackLog(self.feedback)
        self.recent: OrderedDict[str, int] = OrderedDict()
        """Request id -> how many instances it had, newest last."""

    def start(self) -> None:
        if self.monitor.log_predictions:
            self.writer.start()

    def stop(self) -> None:
        self.writer.stop()

    def record(
        self,
        request_id: str,
        instances: Sequence[Any],
        observed: Sequence[Observed],
        version: int,
        model_tag: str,
        latency_ms: float,
    ) -> None:
        """Hand one answered request to the log (at once: the writer works in the background)."""
        self.recent[request_id] = len(observed)
        if len(self.recent) > RECENT_REQUESTS:
            self.recent.popitem(last=False)
        if not self.monitor.log_predictions or not self.writer.sampled(request_id):
            return
        now = time.time()
        # Built unvalidated: on the event loop, and every field is the server's own typed value.
        self.writer.submit(
            [
                PredictionRecord.model_construct(
                    request_id=request_id,
                    index=index,
                    time=now,
                    model_version=version,
                    model_tag=model_tag,
                    latency_ms=round(latency_ms, 3),
                    prediction=item.prediction,
                    features=item.features,
                    embedding=item.embedding,
                    warnings=item.warnings,
                    input=_as_json(instance) if self.monitor.log_inputs else None,
                )
                for index, (item, instance) in enumerate(zip(observed, instances, strict=True))
            ]
        )

    def accept_feedback(self, items: Sequence[FeedbackItem], card: ModelCard) -> int:
        """Record every item, or none: each must name an answered instance and a valid label."""
        for position, item in enumerate(items):
            where = f"feedback[{position}]." if len(items) > 1 else ""
            problem = label_problem(item.label, card)
            if problem is not None:
                raise FeedbackRefused(400, f"{where}label: {problem}")
            if not self._answered(item.request_id, item.index):
                raise FeedbackRefused(
                    404,
                    f"{where}request_id: no answered instance {item.index} of request "
                    f"{item.request_id!r} (use the `request_id` a /predict response carries, "
                    "and the instance's position in that request as `index`; requests not "
                    "logged, by `monitor.sample_share` or the log's size cap, cannot be found)",
                )
        now = time.time()
        self.feedback_log.append(
            [
                FeedbackRecord(
                    request_id=item.request_id,
                    index=item.index,
                    label=item.label,  # checked by label_problem
                    time=now,
                )
                for item in items
            ]
        )
        return len(items)

    def _answered(self, request_id: str, index: int) -> bool:
        count = self.recent.get(request_id)
        if count is not None:
            return index < count
        return find_prediction(self.predictions, request_id, index) is not None


def _as_json(instance: Any) -> Any:
    if hasattr(instance, "model_dump"):
        return instance.model_dump(by_alias=True)
    if hasattr(instance, "tolist"):
        return instance.tolist()
    return instance
