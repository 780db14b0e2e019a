"""The prediction log: each answered instance as a JSON line, written off the request path.

A model server hands each answered batch to `PredictionLogWriter.submit()`, which only queues it;
a daemon thread writes what waits to append-only `predictions-<start>-<writer>-<seq>.jsonl` files
in one folder. Every writer (one per server process) writes only its own files, so several
processes share the folder without sharing a file. Names sort by the time a file was begun.

A reader (the monitor, `POST /feedback`) reads the files while they are written: every write is
whole lines, so only a file's last line can be cut short, and a line without its newline is
skipped. A writer holds an `flock` on the file it has open; the folder's cap deletes only files
nobody holds, oldest first, so it never pulls a file from under another process.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

MiB = 1024 * 1024
PREDICTION_FILES = "predictions-*.jsonl"
FEEDBACK_FILES = "feedback-*.jsonl"
# Slack for clock steps (NTP) between stamping a record and writing it, when a reader skips
# files by their last-modified time.
_CLOCK_SLACK_SECONDS = 60.0
_WRITER_ID = re.compile(r"[A-Za-z0-9_]+")  # no "-": it separates the parts of a file name

_logger = logging.getLogger(__name__)
_Record = TypeVar("_Record", bound=BaseModel)


class PredictionRecord(BaseModel):
    """One answered instance, as served."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    index: int = 0
    """Position of the instance in its request."""
    time: float
    """Unix seconds, when it was answered."""
    model_version: int
    model_tag: str
    latency_ms: float
    prediction: dict[str, Any]
    features: dict[str, float | int | str | bool | None]
    """What the monitor needs of the instance."""
    embedding: list[float] | None = None
    """A text's or an image's summary vector (what embedding drift compares)."""
    warnings: list[str] = Field(default_factory=list)
    input: Any | None = None
    """The raw instance, only where the server is told to log inputs."""


class FeedbackRecord(BaseModel):
    """The true label of one answered instance, as a user reports it later."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    index: int = 0
    label: int | float | str
    time: float


@dataclass(frozen=True)
class LogLimits:
    """How big the log may grow and how much of the traffic it keeps."""

    rotate_bytes: int = 8 * MiB
    rotate_seconds: float = 3600.0
    max_total_bytes: int = 256 * MiB
    """The folder's cap: past it the oldest closed files are deleted."""
    queue_records: int = 100_000
    """Records waiting for the writer; past it `submit` drops them (counted)."""
    sample_share: float = 1.0
    flush_seconds: float = 0.5

    def __post_init__(self) -> None:
        positive = ("rotate_bytes", "rotate_seconds", "max_total_bytes", "queue_records")
        for name in (*positive, "flush_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LogLimits.{name} must be above 0, not {getattr(self, name)}")
        if not 0.0 <= self.sample_share <= 1.0:
            raise ValueError(f"LogLimits.sample_share must be in [0, 1], not {self.sample_share}")


@dataclass
class LogCounters:
    """What the writer did since it began (read by `/metrics`)."""

    written: int = 0
    dropped_queue_full: int = 0
    dropped_write_error: int = 0
    dropped_unserialisable: int = 0
    files_rotated: int = 0
    files_deleted: int = 0


@dataclass
class _OpenFile:
    fd: int
    path: Path
    size: int
    opened_at: float


class PredictionLogWriter:
    """Queues answered records and writes them from a daemon thread; never fails its caller."""

    def __init__(
        self,
        folder: Path,
        limits: LogLimits,
        clock: Callable[[], float] = time.time,
        writer_id: str | None = None,
    ) -> None:
        self.folder = folder
        self.limits = limits
        self.writer_id = str(os.getpid()) if writer_id is None else writer_id
        if not _WRITER_ID.fullmatch(self.writer_id):
            raise ValueError(f"writer_id must be letters, digits or _, not {self.writer_id!r}")
        self._clock = clock
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=limits.queue_records)
        self._counters = LogCounters()
        self._counters_lock = threading.Lock()
        self._write_lock = threading.Lock()  # the thread and a caller's flush() share the file
        self._file: _OpenFile | None = None
        self._seq = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def counters(self) -> LogCounters:
        """A consistent copy of the counters."""
        with self._counters_lock:
            return replace(self._counters)

    def sampled(self, request_id: str) -> bool:
        """Whether a request is logged: a stable hash of its id, the same in every process."""
        # Not hash(): it is salted per process, and all workers must agree on the same requests.
        digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
        # Compared as a number of 2**64 (Python compares int and float exactly): as a fraction,
        # the largest digests would round to 1.0 and be left out even at a share of 1.0.
        return int.from_bytes(digest, "big") < self.limits.sample_share * 2**64

    def submit(self, records: Sequence[PredictionRecord]) -> None:
        """Queue the sampled records of an answered batch; drop (and count) what does not fit."""
        dropped = 0
        for record in records:
            if not self.sampled(record.request_id):
                continue
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                dropped += 1
        if dropped:
            self._count(dropped_queue_full=dropped)

    def start(self) -> None:
        """Begin writing from a daemon thread (so a hung disk never holds the server's exit)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        try:
            with self._write_lock:
                self._enforce_cap()  # a restart may find the folder over a cap lowered since
        except OSError as error:
            _logger.warning("prediction log: cannot trim %s: %s", self.folder, error)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what waits and close the file."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            self.flush()
            self._close_guarded()
            return
        self._stopping.set()
        thread.join(timeout)
        if thread.is_alive():
            _logger.warning("the prediction log writer did not finish within %.1f s", timeout)

    def flush(self) -> None:
        """Write what waits now, in the caller's thread."""
        try:
            with self._write_lock:
                self._write_waiting()
        except Exception:
            # An unforeseen error must not end the writer thread: the server would go on
            # queueing records into a log that nobody writes any more.
            _logger.exception("the prediction log could not be written")

    def _run(self) -> None:
        while not self._stopping.wait(self.limits.flush_seconds):
            self.flush()
        self.flush()
        self._close_guarded()

    def _count(self, **increments: int) -> None:
        with self._counters_lock:
            for name, value in increments.items():
                setattr(self._counters, name, getattr(self._counters, name) + value)

    def _write_waiting(self) -> None:
        rotated = self._file is not None and (
            self._clock() - self._file.opened_at >= self.limits.rotate_seconds
        )
        if rotated:
            self._close(rotated=True)
        lines = list(self._serialised(self._drain()))
        start = 0
        while start < len(lines):
            if self._file is not None and not self._fits(self._file.size, len(lines[start])):
                self._close(rotated=True)
                rotated = True
            file = self._file or self._open_or_none()
            if file is None:
                self._count(dropped_write_error=len(lines) - start)
                break
            end, size = start, file.size
            while end < len(lines) and (end == start or self._fits(size, len(lines[end]))):
                size += len(lines[end])
                end += 1
            self._append(file, b"".join(lines[start:end]), end - start)
            start = end
        if rotated:
            self._enforce_cap()

    def _fits(self, size: int, more: int) -> bool:
        """Whether a file of `size` bytes takes `more`; an empty one takes any line."""
        return size == 0 or size + more <= self.limits.rotate_bytes

    def _drain(self) -> Iterator[PredictionRecord]:
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def _serialised(self, records: Iterator[PredictionRecord]) -> Iterator[bytes]:
        for record in records:
            try:
                yield record.model_dump_json().encode() + b"\n"
            except ValueError as error:  # a value JSON cannot hold, e.g. a numpy integer
                _logger.warning("prediction log: record %s dropped: %s", record.request_id, error)
                self._count(dropped_unserialisable=1)

    def _open_or_none(self) -> _OpenFile | None:
        try:
            self._file = self._open()
        except OSError as error:
            _logger.warning("prediction log: cannot open a file in %s: %s", self.folder, error)
        return self._file

    def _open(self) -> _OpenFile:
        self.folder.mkdir(parents=True, exist_ok=True)
        now = self._clock()
        stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%dT%H%M%S.%f")
        while True:
            self._seq += 1
            path = self.folder / f"predictions-{stamp}-{self.writer_id}-{self._seq:06d}.jsonl"
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
            try:
                fd = os.open(path, flags, 0o644)
            except FileExistsError:  # a restart that got the same pid within one microsecond
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while open: the cap never deletes this file
            return _OpenFile(fd, path, size=0, opened_at=now)

    def _append(self, file: _OpenFile, data: bytes, records: int) -> None:
        try:
            _write_all(file.fd, data)
        except OSError as error:
            _logger.warning("prediction log: %d records dropped: %s", records, error)
            self._count(dropped_write_error=records)
            try:
                # Cut off what part of the batch went in, or the next line would continue it.
                os.ftruncate(file.fd, file.size)
            except OSError:
                self._close(rotated=False)  # the torn line stays the last line of its file
            return
        file.size += len(data)
        self._count(written=records)

    def _close(self, rotated: bool) -> None:
        if self._file is None:
            return
        os.close(self._file.fd)
        self._file = None
        if rotated:
            self._count(files_rotated=1)

    def _close_guarded(self) -> None:
        try:
            with self._write_lock:
                self._close(rotated=False)
                self._enforce_cap()
        except Exception:
            _logger.exception("the prediction log could not be closed")

    def _enforce_cap(self) -> None:
        sizes: list[tuple[Path, int]] = []
        for path in sorted(self.folder.glob(PREDICTION_FILES)):
            try:
                sizes.append((path, path.stat().st_size))
            except FileNotFoundError:  # another writer's cap deleted it meanwhile
                continue
        total = sum(size for _, size in sizes)
        own = None if self._file is None else self._file.path
        for path, size in sizes:
            if total <= self.limits.max_total_bytes:
                break
            # An empty file may be one that a writer has just created and not yet locked.
            if size == 0 or path == own:
                continue
            if _delete_if_closed(path):
                total -= size
                self._count(files_deleted=1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, "no byte written")
        view = view[written:]


def _delete_if_closed(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a writer still has it open
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def _complete_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # deleted by the cap since the folder was listed
        return []
    # The last piece is empty or a line still being written: never a whole record.
    return data.split(b"\n")[:-1]


def read_predictions(
    folder: Path, since: float | None = None, limit: int | None = None
) -> list[PredictionRecord]:
    """Every complete record answered at or after `since`, oldest first; `limit`: the newest."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    records: list[PredictionRecord] = []
    for path in sorted(folder.glob(PREDICTION_FILES)):
        try:
            modified = path.stat().st_mtime
        except FileNotFoundError:
            continue
        # Every record was answered before its file was last written, so an old file holds
        # nothing at or after `since`; this spares the monitor parsing the whole folder.
        if since is not None and modified < since - _CLOCK_SLACK_SECONDS:
            continue
        for record in _parsed(_complete_lines(path), PredictionRecord):
            if since is None or record.time >= since:
                records.append(record)
    records.sort(key=lambda record: record.time)  # writers' files interleave in time
    if limit is None:
        return records
    return records[len(records) - limit :] if limit else []


def find_prediction(folder: Path, request_id: str, index: int = 0) -> PredictionRecord | None:
    """The logged record of one instance, looking in the newest files first."""
    needle = b'"request_id":' + to_json(request_id)  # as model_dump_json writes it
    for path in sorted(folder.glob(PREDICTION_FILES), reverse=True):
        lines = [line for line in reversed(_complete_lines(path)) if needle in line]
        for record in _parsed(lines, PredictionRecord):
            if record.request_id == request_id and record.index == index:
                return record
    return None


def _parsed(lines: Sequence[bytes], model: type[_Record]) -> Iterator[_Record]:
    for line in lines:
        try:
            yield model.model_validate_json(line)
        except ValidationError:
            # A line no reader can use (edited by hand, or from a newer shape of record) must
            # not hide the records around it.
            continue


class FeedbackLog:
    """Appends reported labels synchronously to this process's own file in the folder."""

    def __init__(self, folder: Path, writer_id: str | None = None) -> None:
        self.folder = folder
        writer = str(os.getpid()) if writer_id is None else writer_id
        if not _WRITER_ID.fullmatch(writer):
            raise ValueError(f"writer_id must be letters, digits or _, not {writer!r}")
        self.path = folder / f"feedback-{writer}.jsonl"
        self._lock = threading.Lock()  # a server's threads share this file

    def append(self, records: Sequence[FeedbackRecord]) -> None:
        """Write the records as whole lines in one append, or raise OSError with none written."""
        data = b"".join(record.model_dump_json().encode() + b"\n" for record in records)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                before = os.fstat(fd).st_size
                try:
                    _write_all(fd, data)
                except OSError:
                    # No other process writes this file, so cutting the torn batch off is safe.
                    with suppress(OSError):
                        os.ftruncate(fd, before)
                    raise
            finally:
                os.close(fd)


def read_feedback(folder: Path) -> dict[tuple[str, int], FeedbackRecord]:
    """The latest label of each (request id, index): by time, across every process's file."""
    records: list[FeedbackRecord] = []
    for path in sorted(folder.glob(FEEDBACK_FILES)):
        records.extend(_parsed(_complete_lines(path), FeedbackRecord))
    records.sort(key=lambda record: record.time)
    return {(record.request_id, record.index): record for record in records}
