"""The lane policy on its own: no server, no engine, no I/O.

Slots need a running event loop (their one-shot signal is the backend's), so the tests are
async and run on both backends; nothing here awaits.
"""

from __future__ import annotations

import itertools

import pytest

from autobatcher._config import BatcherConfig
from autobatcher._job import Job, Phase, Slot
from autobatcher._lanes import Lanes

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"


def make_lanes(**options: object) -> Lanes:
    config = BatcherConfig(api_key="k", base_url="http://127.0.0.1:9/v1", **options)  # type: ignore[arg-type]
    keys = itertools.count(1)
    return Lanes(config, lambda: f"job-{next(keys)}")


def slot(n: int, endpoint: str = CHAT, model: str = "m", size: int = 10, inputs: int = 1) -> Slot:
    return Slot(f"c{n}", endpoint, model, b"x" * (size - 1) + b"\n", inputs)


async def test_a_lane_flushes_at_batch_size_and_keeps_line_order() -> None:
    lanes = make_lanes(batch_size=3)
    for n in range(7):
        lanes.add(slot(n), now=0.0)
    flushed = lanes.take_flushed()
    assert [list(job.slots) for job in flushed] == [["c0", "c1", "c2"], ["c3", "c4", "c5"]]
    assert all(job.phase == Phase.QUEUED for job in flushed)
    assert lanes.take_flushed() == []  # taken once
    assert bool(lanes)  # c6 still waits in an open lane
    assert lanes.pending == 7  # nothing uploaded yet


async def test_lanes_are_keyed_by_endpoint_and_model() -> None:
    lanes = make_lanes(batch_size=2)
    for item in (slot(1, model="a"), slot(2, model="b"), slot(3, EMBED, "a"), slot(4, model="a")):
        lanes.add(item, now=0.0)
    (only,) = lanes.take_flushed()
    assert list(only.slots) == ["c1", "c4"]
    assert (only.record.endpoint, only.record.model) == (CHAT, "a")


async def test_the_byte_cap_flushes_before_a_line_that_would_not_fit() -> None:
    lanes = make_lanes(batch_size=100, max_batch_bytes=25)
    for n in range(3):  # 10 bytes each: the third would make 30 > 25
        lanes.add(slot(n, size=10), now=0.0)
    (first,) = lanes.take_flushed()
    assert list(first.slots) == ["c0", "c1"]
    assert first.nbytes == 20


async def test_the_line_cap_and_the_embedding_input_cap() -> None:
    lanes = make_lanes(batch_size=100, max_batch_lines=2)
    for n in range(3):
        lanes.add(slot(n), now=0.0)
    assert [len(job.slots) for job in lanes.take_flushed()] == [2]

    lanes = make_lanes(batch_size=100, max_embedding_inputs=5)
    lanes.add(slot(1, EMBED, inputs=3), now=0.0)
    lanes.add(slot(2, EMBED, inputs=3), now=0.0)  # 6 inputs would exceed 5
    (job,) = lanes.take_flushed()
    assert list(job.slots) == ["c1"]
    assert job.inputs == 3


async def test_windows_close_on_the_clock_given() -> None:
    lanes = make_lanes(batch_size=100, batch_window_seconds=2.0)
    lanes.add(slot(1, model="a"), now=10.0)
    lanes.add(slot(2, model="b"), now=11.0)
    assert lanes.due(11.5) == 12.0  # nothing due; the next window closes at 12
    assert lanes.take_flushed() == []
    assert lanes.due(12.0) == 13.0
    assert [job.record.model for job in lanes.take_flushed()] == ["a"]
    assert lanes.due(13.0) == float("inf")
    assert [job.record.model for job in lanes.take_flushed()] == ["b"]
    assert not lanes


async def test_withdrawing_undoes_exactly_what_the_request_added() -> None:
    lanes = make_lanes(batch_size=100)
    first, second = slot(1, size=10, inputs=2), slot(2, size=30)
    lanes.add(first, now=0.0)
    lanes.add(second, now=0.0)
    job = first.job
    assert isinstance(job, Job)
    assert (job.nbytes, job.inputs, job.queued, lanes.pending) == (40, 3, 2, 2)
    assert lanes.withdraw(first) is False  # the lane still holds a request
    assert (job.nbytes, job.inputs, job.queued, lanes.pending) == (30, 1, 1, 1)
    assert list(job.slots) == ["c2"]
    assert lanes.withdraw(second) is True  # empty now: an open lane is dropped at once
    assert job.phase == Phase.DONE
    assert not lanes
    assert lanes.pending == 0
    assert lanes.withdraw(second) is False  # a second withdrawal changes nothing
    assert lanes.pending == 0


async def test_an_emptied_flushed_job_is_reported_for_the_engine_to_drop() -> None:
    lanes = make_lanes(batch_size=1)
    only = slot(1)
    lanes.add(only, now=0.0)
    (job,) = lanes.take_flushed()
    assert lanes.withdraw(only) is True
    assert job.phase == Phase.QUEUED  # the engine owns flushed jobs: it drops them
    assert lanes.pending == 0


async def test_the_bound_counts_requests_until_their_job_is_released() -> None:
    lanes = make_lanes(batch_size=2, max_queued_requests=3)
    for n in range(3):
        lanes.add(slot(n), now=0.0)
    assert not lanes.has_room()
    (job,) = lanes.take_flushed()
    lanes.release(job)  # uploaded: its two lines are upstream
    assert lanes.pending == 1
    assert lanes.has_room()
    assert job.queued == 0
    lanes.release(job)  # releasing twice does not free more than it held
    assert lanes.pending == 1


async def test_clear_hands_back_open_lanes_and_untaken_flushes() -> None:
    lanes = make_lanes(batch_size=2)
    for n in range(3):
        lanes.add(slot(n), now=0.0)
    jobs = lanes.clear()
    assert sorted(len(job.slots) for job in jobs) == [1, 2]
    assert lanes.pending == 0
    assert not lanes
    assert lanes.take_flushed() == []


async def test_the_token_cap_flushes_before_a_line_that_would_go_over_it() -> None:
    # 40-byte lines are 10 estimated tokens each: a quota of 25 holds two per batch, per model
    config = BatcherConfig(api_key="k", base_url="http://127.0.0.1:9/v1", batch_size=100)
    keys = itertools.count(1)
    caps = {"m": 25}
    lanes = Lanes(config, lambda: f"job-{next(keys)}", caps.get)
    for n in range(5):
        lanes.add(slot(n, size=40), now=0.0)
    for n in range(5, 10):
        lanes.add(slot(n, model="free", size=40), now=0.0)
    assert [list(job.slots) for job in lanes.take_flushed()] == [["c0", "c1"], ["c2", "c3"]]
    lanes.flush_all(now=0.0)
    assert [len(job.slots) for job in lanes.take_flushed()] == [1, 5]  # no cap for "free"
