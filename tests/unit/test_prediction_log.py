"""The prediction log keeps every answered instance it can, never fails the server, stays under
its cap, and is read (also while being written) by the monitor and by `POST /feedback`."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlaas.stores import prediction_log
from mlaas.stores.prediction_log import (
    FeedbackLog,
    FeedbackRecord,
    LogLimits,
    PredictionLogWriter,
    PredictionRecord,
    find_prediction,
    read_feedback,
    read_predictions,
)


def record(number: int, request: str | None = None, index: int = 0) -> PredictionRecord:
    return PredictionRecord(
        request_id=request or f"req-{number}",
        index=index,
        time=1_000.0 + number,
        model_version=3,
        model_tag="v3",
        latency_ms=1.5,
        prediction={"label": number % 2, "score": 0.9},
        features={"x": float(number), "city": "Lyon", "ok": True, "missing": None},
    )


def records(count: int, first: int = 0) -> list[PredictionRecord]:
    return [record(number) for number in range(first, first + count)]


def log_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("predictions-*.jsonl"))


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


LINE_BYTES = len(record(10).model_dump_json()) + 1  # records 10-99 serialise to the same size


def test_submitted_records_are_all_read_back_in_order_after_stop(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits(flush_seconds=0.01))
    writer.start()
    sent = records(100)
    for batch in range(0, 100, 7):
        writer.submit(sent[batch : batch + 7])
    writer.stop()
    assert read_predictions(tmp_path) == sent
    assert writer.counters.written == 100


def test_the_writer_thread_writes_while_the_server_runs(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits(flush_seconds=0.01))
    writer.start()
    writer.submit(records(3))
    for _ in range(500):  # polls up to 5 s: no promise on how fast, only that it happens
        if len(read_predictions(tmp_path)) == 3:
            break
        time.sleep(0.01)
    assert read_predictions(tmp_path) == records(3)
    writer.stop()


def test_since_keeps_records_answered_at_or_after_it_and_limit_keeps_the_newest(
    tmp_path: Path,
) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits())
    writer.submit(records(10))
    writer.stop()
    assert read_predictions(tmp_path, since=1_006.0) == records(4, first=6)
    assert read_predictions(tmp_path, limit=3) == records(3, first=7)
    assert read_predictions(tmp_path, since=1_002.0, limit=20) == records(8, first=2)
    assert read_predictions(tmp_path, limit=0) == []
    assert read_predictions(tmp_path / "never-written") == []


def test_submit_never_blocks_and_counts_what_a_full_queue_drops(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits(queue_records=10))  # never started
    submitter = threading.Thread(target=writer.submit, args=(records(50),), daemon=True)
    submitter.start()
    submitter.join(timeout=5)  # a put that waits for room would hang here for good
    assert not submitter.is_alive()
    assert writer.counters.dropped_queue_full == 40
    writer.stop()
    assert read_predictions(tmp_path) == records(10)


def test_an_unwritable_folder_drops_and_counts_records_then_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "pipelines"
    blocker.write_text("a file where the folder should be")
    folder = blocker / "predictions"
    writer = PredictionLogWriter(folder, LogLimits(flush_seconds=0.01))
    writer.start()
    writer.submit(records(5))  # must not raise, now or later
    for _ in range(500):
        if writer.counters.dropped_write_error == 5:
            break
        time.sleep(0.01)
    assert writer.counters.dropped_write_error == 5
    writer.stop()

    blocker.unlink()
    writer.submit(records(5, first=5))
    writer.stop()  # not running: stop writes what waits in the caller's thread
    assert read_predictions(folder) == records(5, first=5)
    assert writer.counters.written == 5


def test_a_write_cut_short_by_a_full_disk_leaves_no_half_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_then_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    writer = PredictionLogWriter(tmp_path, LogLimits())
    writer.submit(records(2))
    writer.flush()
    monkeypatch.setattr(prediction_log, "_write_all", half_then_full)
    writer.submit(records(3, first=2))
    writer.flush()
    monkeypatch.undo()
    writer.submit(records(2, first=5))
    writer.stop()

    assert writer.counters.dropped_write_error == 3
    assert read_predictions(tmp_path) == records(2) + records(2, first=5)
    (only,) = log_files(tmp_path)
    lines = only.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [PredictionRecord.model_validate_json(line) for line in lines[:-1]] == (
        records(2) + records(2, first=5)
    )


def test_rotation_by_size_begins_new_files_and_loses_no_record(tmp_path: Path) -> None:
    limits = LogLimits(rotate_bytes=3 * LINE_BYTES)
    writer = PredictionLogWriter(tmp_path, limits)
    sent = records(20, first=10)
    for batch in range(0, 20, 4):
        writer.submit(sent[batch : batch + 4])
        writer.flush()
    writer.stop()
    files = log_files(tmp_path)
    assert len(files) == 7
    assert all(path.stat().st_size <= limits.rotate_bytes for path in files)
    assert writer.counters.files_rotated == 6
    assert read_predictions(tmp_path) == sent


def test_rotation_by_age_closes_a_file_past_rotate_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = PredictionLogWriter(tmp_path, LogLimits(rotate_seconds=60.0), clock=clock)
    writer.submit(records(2))
    writer.flush()
    clock.now += 59.0
    writer.submit(records(2, first=2))
    writer.flush()
    assert len(log_files(tmp_path)) == 1
    clock.now += 1.0
    writer.flush()  # an idle file is closed too, so the cap may delete it later
    assert writer.counters.files_rotated == 1
    writer.submit(records(2, first=4))
    writer.stop()
    assert len(log_files(tmp_path)) == 2
    assert read_predictions(tmp_path) == records(6)


def test_the_cap_deletes_the_oldest_closed_files(tmp_path: Path) -> None:
    limits = LogLimits(rotate_bytes=2 * LINE_BYTES, max_total_bytes=6 * LINE_BYTES)
    writer = PredictionLogWriter(tmp_path, limits)
    sent = records(40, first=10)
    for one in sent:
        writer.submit([one])
        writer.flush()
        total = sum(path.stat().st_size for path in log_files(tmp_path))
        assert total <= limits.max_total_bytes + limits.rotate_bytes  # the open file on top
    writer.stop()
    assert sum(path.stat().st_size for path in log_files(tmp_path)) <= limits.max_total_bytes
    assert writer.counters.files_deleted == 17
    assert read_predictions(tmp_path) == sent[-6:]


def test_the_cap_spares_a_file_another_writer_still_has_open(tmp_path: Path) -> None:
    limits = LogLimits(rotate_bytes=2 * LINE_BYTES, max_total_bytes=4 * LINE_BYTES)
    clock = FakeClock()
    other = PredictionLogWriter(tmp_path, limits, clock=clock, writer_id="other")
    other.submit(records(1, first=10))
    other.flush()  # the oldest file of the folder, still open
    clock.now += 1.0
    writer = PredictionLogWriter(tmp_path, limits, clock=clock, writer_id="this")
    for one in records(10, first=20):
        writer.submit([one])
        writer.flush()
    assert record(10) in read_predictions(tmp_path)
    other.stop()
    writer.submit([record(30)])
    writer.stop()
    assert record(10) not in read_predictions(tmp_path)


def test_sampling_keeps_about_the_share_asked_for_and_the_same_ids_in_every_writer(
    tmp_path: Path,
) -> None:
    half = PredictionLogWriter(tmp_path, LogLimits(sample_share=0.5))
    ids = [f"request-{number}" for number in range(2_000)]
    kept = [request for request in ids if half.sampled(request)]
    assert 800 <= len(kept) <= 1_200
    # Another process (another hash salt) must pick the very same requests.
    script = (
        "import sys; from pathlib import Path; from mlaas.stores.prediction_log import *; "
        "w = PredictionLogWriter(Path(sys.argv[1]), LogLimits(sample_share=0.5)); "
        "print(sum(w.sampled(f'request-{n}') << n for n in range(2000)))"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(other.stdout) == sum(half.sampled(request) << n for n, request in enumerate(ids))
    assert not any(
        PredictionLogWriter(tmp_path, LogLimits(sample_share=0.0)).sampled(r) for r in ids
    )
    assert all(PredictionLogWriter(tmp_path, LogLimits(sample_share=1.0)).sampled(r) for r in ids)


def test_submit_logs_only_sampled_requests_with_all_their_instances(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits(sample_share=0.5))
    sent = [record(n, request=f"request-{n // 3}", index=n % 3) for n in range(300)]
    writer.submit(sent)
    writer.stop()
    assert read_predictions(tmp_path) == [one for one in sent if writer.sampled(one.request_id)]
    assert writer.counters.dropped_queue_full == 0


@pytest.mark.parametrize("cut", [1, 0], ids=["without-its-brace", "without-its-newline"])
def test_a_last_line_still_being_written_is_skipped(tmp_path: Path, cut: int) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits())
    writer.submit(records(3))
    writer.stop()
    (only,) = log_files(tmp_path)
    line = record(3).model_dump_json().encode()
    with only.open("ab") as output:
        output.write(line[: len(line) - cut])
    assert read_predictions(tmp_path) == records(3)
    assert find_prediction(tmp_path, "req-3") is None


def test_since_finds_records_in_a_file_whose_time_stamp_a_clock_step_set_back(
    tmp_path: Path,
) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits())
    writer.submit(records(10))
    writer.stop()
    (only,) = log_files(tmp_path)
    os.utime(only, (1_000.0, 1_000.0))  # written, by the clock, before most of its records
    assert read_predictions(tmp_path, since=1_005.0) == records(5, first=5)
    os.utime(only, (900.0, 900.0))  # long before: the file holds nothing that recent
    assert read_predictions(tmp_path, since=1_005.0) == []


def test_a_line_that_does_not_parse_does_not_hide_the_others(tmp_path: Path) -> None:
    writer = PredictionLogWriter(tmp_path, LogLimits())
    writer.submit(records(1))
    writer.flush()
    (only,) = log_files(tmp_path)
    with only.open("ab") as output:
        output.write(b'{"request_id": "edited by hand"}\n')
    writer.submit(records(1, first=1))
    writer.stop()
    assert read_predictions(tmp_path) == records(2)


def test_find_prediction_finds_what_an_earlier_writer_logged(tmp_path: Path) -> None:
    before = PredictionLogWriter(tmp_path, LogLimits(), writer_id="before")
    before.submit([record(1, request='id "quoted" é', index=0), record(2, request="r", index=1)])
    before.stop()
    after = PredictionLogWriter(tmp_path, LogLimits(), writer_id="after")  # the restart
    after.start()
    after.submit(records(5, first=10))
    after.stop()
    assert find_prediction(tmp_path, 'id "quoted" é') == record(1, request='id "quoted" é')
    assert find_prediction(tmp_path, "r", index=1) == record(2, request="r", index=1)
    assert find_prediction(tmp_path, "r", index=0) is None
    assert find_prediction(tmp_path, "unknown") is None


def test_two_writers_in_one_folder_never_share_a_file(tmp_path: Path) -> None:
    limits = LogLimits(rotate_bytes=4 * LINE_BYTES, flush_seconds=0.01)
    first = PredictionLogWriter(tmp_path, limits, writer_id="1001")
    second = PredictionLogWriter(tmp_path, limits, writer_id="1002")
    first.start()
    second.start()
    sent = [record(number, request=f"{1001 + number % 2}-{number}") for number in range(60)]
    for one in sent:
        (first if one.request_id.startswith("1001") else second).submit([one])
    first.stop()
    second.stop()
    files = log_files(tmp_path)
    assert {path.name.split("-")[2] for path in files} == {"1001", "1002"}
    for path in files:
        writer_id = path.name.split("-")[2]
        logged = [
            PredictionRecord.model_validate_json(line) for line in path.read_bytes().splitlines()
        ]
        assert all(one.request_id.startswith(f"{writer_id}-") for one in logged)
    assert read_predictions(tmp_path) == sent


def test_feedback_is_read_back_with_the_last_label_of_each_instance(tmp_path: Path) -> None:
    one = FeedbackLog(tmp_path, writer_id="1001")
    two = FeedbackLog(tmp_path, writer_id="1002")
    one.append([FeedbackRecord(request_id="a", label=1, time=10.0)])
    two.append([FeedbackRecord(request_id="a", index=1, label="cat", time=11.0)])
    two.append([FeedbackRecord(request_id="a", label=0, time=12.0)])
    one.append([FeedbackRecord(request_id="b", label=2.5, time=13.0)])
    assert read_feedback(tmp_path) == {
        ("a", 0): FeedbackRecord(request_id="a", label=0, time=12.0),
        ("a", 1): FeedbackRecord(request_id="a", index=1, label="cat", time=11.0),
        ("b", 0): FeedbackRecord(request_id="b", label=2.5, time=13.0),
    }
    assert read_predictions(tmp_path) == []  # feedback files are not predictions


@pytest.mark.parametrize(
    "wrong", [{"rotate_bytes": 0}, {"sample_share": 1.5}, {"flush_seconds": -1.0}]
)
def test_limits_out_of_bounds_are_refused(wrong: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(wrong))):
        LogLimits(**wrong)  # type: ignore[arg-type]


def test_a_restart_under_a_lower_cap_trims_the_folder_at_once(tmp_path: Path) -> None:
    before = PredictionLogWriter(tmp_path, LogLimits(rotate_bytes=2 * LINE_BYTES))
    for one in records(10, first=10):
        before.submit([one])
        before.flush()
    before.stop()
    lower = LogLimits(rotate_bytes=2 * LINE_BYTES, max_total_bytes=4 * LINE_BYTES)
    after = PredictionLogWriter(tmp_path, lower)
    after.start()
    assert read_predictions(tmp_path) == records(4, first=16)
    assert after.counters.files_deleted == 3
    after.stop()


def test_a_writer_id_that_would_break_file_names_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writer_id"):
        PredictionLogWriter(tmp_path, LogLimits(), writer_id="host-1")
    with pytest.raises(ValueError, match="writer_id"):
        FeedbackLog(tmp_path, writer_id="../elsewhere")
