"""The lane policy: synchronous and I/O-free.

Which lane a request joins (one per endpoint and model, as one batch file must be), when a
lane is flushed into a job (``batch_size``; the file's line, byte and embedding-input caps;
the model's enqueued-token quota, when one is known; the window), what withdrawing a
request undoes, and the bound on requests held in memory before upload. Nothing here awaits,
so a cancellation can never catch it half-way; the engine does the I/O around it.
Unit-tested without a server (``tests/test_lanes.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ._config import BatcherConfig, estimate_tokens
from ._job import Job, JobRecord, Phase, Slot

__all__ = ["Lanes"]


class Lanes:
    def __init__(
        self,
        config: BatcherConfig,
        new_key: Callable[[], str],
        token_cap: Callable[[str], int | None] = lambda model: None,
    ) -> None:
        self._config = config
        self._new_key = new_key
        #: the enqueued-token quota of a model, if one is known: no batch estimates above it
        self._token_cap = token_cap
        self._open: dict[tuple[str, str], Job] = {}
        #: requests taken in and not uploaded yet: in open lanes and in flushed jobs
        self.pending = 0
        #: jobs flushed and not yet taken by the engine (``take_flushed``)
        self._flushed: list[Job] = []

    def __bool__(self) -> bool:
        return bool(self._open)

    def has_room(self) -> bool:
        """Whether the engine may take another request from the intake stream."""
        return self.pending < self._config.max_queued_requests

    def take_flushed(self) -> list[Job]:
        """The jobs flushed since the last call, in flush order."""
        flushed, self._flushed = self._flushed, []
        return flushed

    def add(self, slot: Slot, now: float) -> None:
        """Put ``slot`` in its lane, flushing the lane when it is full (before or after)."""
        config = self._config
        key = (slot.endpoint, slot.model)
        line = slot.line or b""
        job = self._open.get(key)
        cap = self._token_cap(slot.model)
        if job is not None and (
            len(job.slots) >= config.max_batch_lines
            or job.nbytes + len(line) > config.max_batch_bytes
            or job.inputs + slot.inputs > config.max_embedding_inputs
            or (cap is not None and estimate_tokens(job.nbytes + len(line)) > cap)
        ):
            self._flush(job, now)
            job = None
        if job is None:
            job = Job(
                record=JobRecord(key=self._new_key(), endpoint=slot.endpoint, model=slot.model),
                deadline=now + config.batch_window_seconds,
            )
            self._open[key] = job
        slot.job = job
        job.slots[slot.custom_id] = slot
        job.nbytes += len(line)
        job.inputs += slot.inputs
        job.queued += 1
        self.pending += 1
        if len(job.slots) >= config.batch_size:
            self._flush(job, now)

    def due(self, now: float) -> float:
        """Flush the lanes whose window has closed; returns the next window deadline."""
        next_deadline = math.inf
        for job in list(self._open.values()):
            if job.deadline <= now:
                self._flush(job, now)
            else:
                next_deadline = min(next_deadline, job.deadline)
        return next_deadline

    def flush_all(self, now: float) -> None:
        for job in list(self._open.values()):
            self._flush(job, now)

    def _flush(self, job: Job, now: float) -> None:
        record = job.record
        del self._open[(record.endpoint, record.model)]
        record.phase = Phase.QUEUED
        job.flushed_at = now
        self._flushed.append(job)

    def withdraw(self, slot: Slot) -> bool:
        """Take a not-yet-uploaded request out of its job; True if its job is now empty.

        An empty open lane is dropped here; an empty flushed job is the engine's to drop.
        """
        job = slot.job
        if job is None or job.slots.pop(slot.custom_id, None) is None:
            return False
        job.nbytes -= len(slot.line or b"")
        job.inputs -= slot.inputs
        job.queued -= 1
        self.pending -= 1
        if job.slots:
            return False
        if job.phase == Phase.OPEN:
            del self._open[(job.record.endpoint, job.record.model)]
            job.record.phase = Phase.DONE
        return True

    def release(self, job: Job) -> None:
        """``job``'s lines are upstream (or never will be): they no longer count."""
        self.pending -= job.queued
        job.queued = 0

    def clear(self) -> list[Job]:
        """Forget every open lane (the engine is aborting); returns them."""
        jobs = list(self._open.values()) + self._flushed
        self._open.clear()
        self._flushed = []
        self.pending = 0
        return jobs
