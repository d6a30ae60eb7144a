"""The batcher: lanes, batch jobs, polling, and routing results to waiting callers.

Who drives
----------
All background work (lane windows, uploads, polls, downloads) happens inside
:meth:`Engine.drive`, which runs a task group until a condition holds. Exactly one driver
exists at a time:

* in *run mode* (``async with open_batcher()``, ``async with BatchOpenAI()``, or
  ``await tg.start(client.run)``) the driver is the batcher's own task, in a task group the
  user can see;
* in *standalone mode* (``client = BatchOpenAI()`` … ``await client.close()``, the seed's
  usage) there is no background task at all: a waiting caller drives the engine inside its own
  ``create()`` call until its own answer is in, then hands the engine to another waiting caller.
  Nothing ever outlives the call that runs it.

Hand-over is graceful: sleeps are interrupted at once, HTTP calls in flight finish, and every
job records where it stands (an explicit phase), so the next driver picks it up there. A driver
cancelled mid-call marks the job *unsure*: its successor looks the file or batch up before
sending anything again, so nothing is paid twice.

Batching decisions (which lane, when to flush) are synchronous and I/O-free.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from ._config import BatcherConfig
from ._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BatchCancelledError,
    BatchExpiredError,
    BatchFailedError,
    BatchLostError,
    ClientClosedError,
    MissingResultError,
    NotFoundError,
)
from ._events import BatchEvent, EventKind, emit
from ._jsonl import extract_custom_id
from ._signals import fire, new_signal, wait_for
from ._wire import Wire

__all__ = ["Engine", "Slot"]

logger = logging.getLogger("autobatcher")

_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_RESERVED_KEY = "autobatcher_key"


class Phase(enum.IntEnum):
    OPEN = 0  # collecting requests (a lane)
    QUEUED = 1  # flushed, not uploaded
    UPLOADING = 2  # upload in flight: the lines are fixed
    UPLOADED = 3  # file_id known, batch not created
    SUBMITTED = 4  # batch_id known, polling
    DONE = 5


class _Waiter:
    """Something a task waits for; its signal is replaced when it is appointed driver."""

    __slots__ = ("signal",)

    def __init__(self) -> None:
        self.signal = new_signal()

    def done(self) -> bool:
        raise NotImplementedError


class Slot(_Waiter):
    """One request waiting for its answer: a raw result line, or an exception."""

    __slots__ = ("custom_id", "job", "line", "outcome")

    def __init__(self, custom_id: str, line: bytes, job: Job) -> None:
        self.signal = new_signal()  # (inlined _Waiter.__init__: this runs once per request)
        self.custom_id = custom_id
        self.line: bytes | None = line
        self.job = job
        self.outcome: bytes | BaseException | None = None

    def done(self) -> bool:
        return self.outcome is not None


class _Drained(_Waiter):
    """Waits until the engine has no lane and no job left."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def done(self) -> bool:
        return self.engine.idle()


@attrs.define(eq=False)
class Job:
    """One lane, then one upstream batch: an explicit, resumable state record."""

    key: str
    endpoint: str
    model: str
    deadline: float
    phase: Phase = Phase.OPEN
    slots: dict[str, Slot] = attrs.Factory(dict)  # still-waiting requests, in line order
    nbytes: int = 0
    inputs: int = 0
    queued: int = 0  # how many of our requests count against max_queued_requests
    order: list[str] = attrs.Factory(list)  # custom_ids in file order, fixed at upload
    file_id: str | None = None
    batch_id: str | None = None
    batch: dict[str, Any] | None = None
    upload_unsure: bool = False
    create_unsure: bool = False
    created_wall: float = 0.0
    flushed_at: float = 0.0
    output_seen: int = 0
    error_seen: int = 0
    partial: bool = False
    abandoned: bool = False
    cancel_sent: bool = False
    poll_trouble_since: float | None = None
    idle_scope: anyio.CancelScope | None = None

    @property
    def size(self) -> int:
        return len(self.order) if self.phase >= Phase.UPLOADED else len(self.slots)


class _Stop(Exception):
    """A job task reached a safe point while its driver is handing over."""


class Engine:
    def __init__(self, config: BatcherConfig, wire: Wire) -> None:
        self.config = config
        self.wire = wire
        self._prefix = f"ab{secrets.token_hex(4)}"
        self._seq = 0
        self._job_seq = 0
        self._lanes: dict[tuple[str, str], Job] = {}
        self._jobs: dict[str, Job] = {}  # flushed and not done, by key
        self._runnable: deque[Job] = deque()
        self._queued = 0  # requests not yet uploaded (lanes + queued jobs)
        self._space: anyio.Event | None = None
        self._wake: anyio.Event | None = None
        self._started: set[Job] = set()  # jobs whose task is running now
        self._stopping = False
        self._driver: object | None = None
        self._standalone_waiters: dict[_Waiter, None] = {}
        self._drain_waiters: list[_Drained] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self.standalone = True
        self.closed_reason: str | None = None

    # -- intake (synchronous, in the caller's task) --------------------------------------------

    def next_custom_id(self) -> str:
        self._seq += 1
        return f"{self._prefix}-{self._seq}"

    def has_room(self) -> bool:
        return self._queued < self.config.max_queued_requests

    async def wait_for_room(self) -> None:
        """Backpressure: wait while too many requests are queued and not yet uploaded."""
        while not self.has_room():
            if self.closed_reason is not None:
                raise ClientClosedError(self.closed_reason)
            if self.standalone and self._driver is None:
                # nobody drives: drive until there is room (uploads free it)
                waiter = _Room(self)
                await self.wait(waiter)
                continue
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()

    def submit(self, endpoint: str, model: str, custom_id: str, line: bytes, inputs: int) -> Slot:
        """Put one encoded request in its lane; flush the lane if it is full. Never awaits."""
        if self.closed_reason is not None:
            raise ClientClosedError(self.closed_reason)
        config = self.config
        key = (endpoint, model)
        job = self._lanes.get(key)
        if job is not None and (
            len(job.slots) >= config.max_batch_lines
            or job.nbytes + len(line) > config.max_batch_bytes
            or job.inputs + inputs > config.max_embedding_inputs
        ):
            self._flush(job)
            job = None
        if job is None:
            self._job_seq += 1
            job = Job(
                key=f"{self._prefix}-b{self._job_seq}",
                endpoint=endpoint,
                model=model,
                deadline=anyio.current_time() + config.batch_window_seconds,
            )
            self._lanes[key] = job
            self._poke()
        slot = Slot(custom_id, line, job)
        job.slots[custom_id] = slot
        job.nbytes += len(line)
        job.inputs += inputs
        job.queued += 1
        self._queued += 1
        if len(job.slots) >= config.batch_size:
            self._flush(job)
        return slot

    def _flush(self, job: Job) -> None:
        del self._lanes[(job.endpoint, job.model)]
        job.phase = Phase.QUEUED
        job.flushed_at = time.monotonic()
        self._jobs[job.key] = job
        self._runnable.append(job)
        self._poke()

    def flush_all(self) -> None:
        for job in list(self._lanes.values()):
            self._flush(job)

    def forget(self, slot: Slot) -> None:
        """The caller of ``slot`` is gone (cancelled): undo what it added, wake who must know."""
        if slot.outcome is not None:
            return
        slot.outcome = _GONE
        job = slot.job
        if job.slots.pop(slot.custom_id, None) is None:
            return
        if job.phase <= Phase.QUEUED:
            # never uploaded: take the line out for good
            job.nbytes -= len(slot.line or b"")
            job.queued -= 1
            self._release(1)
            if not job.slots:
                self._drop_job(job)
        elif not job.slots and self.config.cancel_abandoned_batches:
            job.abandoned = True
            self._interrupt(job)
        slot.line = None
        self._check_idle()

    def _drop_job(self, job: Job) -> None:
        if job.phase == Phase.OPEN:
            self._lanes.pop((job.endpoint, job.model), None)
        else:
            self._jobs.pop(job.key, None)
        job.phase = Phase.DONE

    def _release(self, count: int) -> None:
        if not count:
            return
        self._queued -= count
        if self.has_room():
            if self._space is not None:
                self._space.set()
                self._space = None
            if isinstance(self._driver, _Room):
                self._poke()

    def idle(self) -> bool:
        return not self._lanes and not self._jobs

    def _check_idle(self) -> None:
        if self.idle() and self._drain_waiters:
            for waiter in self._drain_waiters:
                fire(waiter.signal)
            self._drain_waiters.clear()
            self._poke()

    # -- waiting and driving ----------------------------------------------------------------------

    async def wait(self, waiter: _Waiter) -> None:
        """Wait until ``waiter`` is done; standalone, drive the engine when it is our turn."""
        if not self.standalone:
            while not waiter.done():
                await wait_for(waiter.signal)
            return
        self._standalone_waiters[waiter] = None
        try:
            while not waiter.done():
                if self._driver is None:
                    self._driver = waiter
                if self._driver is waiter:
                    try:
                        await self.drive(waiter.done)
                    finally:
                        if self._driver is waiter:
                            self._driver = None
                    continue
                signal = waiter.signal
                await wait_for(signal)
                if not waiter.done() and waiter.signal is signal:
                    waiter.signal = new_signal()
        finally:
            del self._standalone_waiters[waiter]
            if self._driver is waiter:  # appointed, but left before taking over
                self._driver = None
            if self._driver is None:
                self._appoint_next()

    def _appoint_next(self) -> None:
        if self.idle() and not self._drain_waiters:
            return
        for candidate in self._standalone_waiters:
            if not candidate.done():
                self._driver = candidate
                fire(candidate.signal)
                return

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def drive(self, until: Callable[[], bool]) -> None:
        """Run the engine's work until ``until()`` holds, then stop every task at a safe point."""
        self._stopping = False
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                while not until():
                    self._start_runnable(tg)
                    now = anyio.current_time()
                    next_deadline = math.inf
                    for job in list(self._lanes.values()):
                        if job.deadline <= now:
                            self._flush(job)
                        else:
                            next_deadline = min(next_deadline, job.deadline)
                    if self._runnable and self._can_start():
                        continue
                    if until():
                        break
                    self._wake = anyio.Event()
                    with anyio.move_on_after(max(0.0, next_deadline - now)):
                        await self._wake.wait()
                    self._wake = None
                # graceful hand-over: interrupt sleeps; HTTP calls in flight finish first
                self._stopping = True
                for job in self._started:
                    self._interrupt(job)
        finally:
            self._tg = None
            self._wake = None
            self._stopping = False

    def _can_start(self) -> bool:
        cap = self.config.max_batches_in_flight
        return cap is None or len(self._started) < cap

    def _start_runnable(self, tg: anyio.abc.TaskGroup) -> None:
        while self._runnable and self._can_start():
            job = self._runnable.popleft()
            if job.phase == Phase.DONE or job in self._started:
                continue
            self._started.add(job)
            tg.start_soon(self._run_job, job)

    def _interrupt(self, job: Job) -> None:
        if job.idle_scope is not None:
            job.idle_scope.cancel()

    async def _idle(self, job: Job, seconds: float) -> None:
        """Sleep between polls; cut short by hand-over or abandonment."""
        if self._stopping:
            raise _Stop
        with anyio.CancelScope() as scope:
            job.idle_scope = scope
            try:
                await anyio.sleep(seconds)
            finally:
                job.idle_scope = None
        if self._stopping:
            raise _Stop

    def _checkpoint(self) -> None:
        if self._stopping:
            raise _Stop

    # -- one batch job ----------------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        try:
            await self._advance_patiently(job)
        except _Stop:
            pass
        except anyio.get_cancelled_exc_class():
            # The driver was cancelled mid-call; the job's unsure flags are already set, so
            # the next driver looks the file or batch up before sending anything again.
            if job.phase == Phase.UPLOADING:
                job.phase = Phase.QUEUED
            raise
        except Exception as exc:
            logger.exception("batch job %s failed unexpectedly", job.key)
            error = exc if isinstance(exc, APIError) else APIError(f"internal error: {exc!r}")
            batch_id = job.batch_id
            self._settle_all(job, lambda cid: _error_for_request(error, cid, batch_id))
            self._finish(job)
        finally:
            self._started.discard(job)
            if job.phase != Phase.DONE and job.key in self._jobs:
                self._runnable.append(job)
            self._poke()

    async def _advance_patiently(self, job: Job) -> None:
        """Advance the job; transient failures of a step are retried within the error budget.

        A single HTTP call gives up after ``max_retries``; a batch job lives for hours, so the
        step is tried again (from the phase it reached) until ``job_error_budget_seconds`` of
        trouble in the same phase. Non-transient errors (4xx) fail the job's requests at once.
        """
        failures = 0
        trouble_since = 0.0
        troubled_phase: Phase | None = None
        while True:
            try:
                await self._advance(job)
            except APIError as exc:
                if job.phase == Phase.UPLOADING:
                    job.phase = Phase.QUEUED
                now = time.monotonic()
                if job.phase != troubled_phase:
                    # new trouble (the job got further since the last): a fresh budget
                    failures, trouble_since, troubled_phase = 0, now, job.phase
                if not is_transient(exc) or (
                    now - trouble_since > self.config.job_error_budget_seconds
                ):
                    raise
                delay = min(0.5 * 2.0**failures, 30.0) * (0.75 + 0.25 * random.random())
                failures += 1
                logger.info("batch job %s: %s; trying again in %.2fs", job.key, exc, delay)
                await self._idle(job, delay)
            else:
                return

    async def _advance(self, job: Job) -> None:
        wire = self.wire
        config = self.config
        if job.phase == Phase.QUEUED:
            if not job.slots:
                self._finish(job)
                return
            filename = f"{job.key}.jsonl"
            job.phase = Phase.UPLOADING
            order = list(job.slots)
            lines = [slot.line or b"" for slot in job.slots.values()]
            nbytes = sum(map(len, lines))

            async def find_file() -> dict[str, Any] | None:
                return await wire.find_file(filename, nbytes)

            uploaded = await find_file() if job.upload_unsure else None
            # Pessimistic until the answer is in hand: a failure or cancellation from here on
            # leaves the job unsure, and the next attempt looks before uploading again.
            job.upload_unsure = True
            if uploaded is None:
                uploaded = await wire.upload_batch_file(
                    filename, lines, nbytes, reconcile=find_file
                )
            job.file_id = str(uploaded["id"])
            job.order = order
            job.upload_unsure = False
            job.phase = Phase.UPLOADED
            for slot in job.slots.values():
                slot.line = None
            self._release(job.queued)
            job.queued = 0
            del lines
            self._checkpoint()
        if job.phase == Phase.UPLOADED:
            if not job.slots:
                await self._discard_file(job)
                self._finish(job)
                return
            metadata = dict(config.batch_metadata or {})
            metadata[_RESERVED_KEY] = job.key
            body = {
                "input_file_id": job.file_id,
                "endpoint": job.endpoint,
                "completion_window": config.completion_window,
                "metadata": metadata,
            }

            async def find_batch() -> dict[str, Any] | None:
                return await self._find_batch(job)

            if not job.created_wall:
                job.created_wall = time.time()
            batch = await find_batch() if job.create_unsure else None
            job.create_unsure = True  # see upload: unsure until the batch id is in hand
            if batch is None:
                batch = await wire.call_json(
                    "POST", "batches", json_body=body, reconcile=find_batch, what="create batch"
                )
            job.batch_id = str(batch["id"])
            job.batch = batch
            job.create_unsure = False
            job.phase = Phase.SUBMITTED
            self._event("batch_submitted", job)
            self._checkpoint()
        if job.phase == Phase.SUBMITTED:
            await self._follow(job)

    async def _discard_file(self, job: Job) -> None:
        if job.file_id is None:
            return
        try:
            await self.wire.delete_file(job.file_id)
        except APIError as exc:
            logger.info("could not delete unused file %s: %s", job.file_id, exc)

    async def _find_batch(self, job: Job) -> dict[str, Any] | None:
        """Look our idempotency key up among the newest batches (after an ambiguous create)."""
        after: str | None = None
        oldest_useful = job.created_wall - 600
        for _ in range(10):
            params: dict[str, str | int] = {"limit": 100}
            if after:
                params["after"] = after
            page = await self.wire.call_json("GET", "batches", params=params, what="list batches")
            data = page.get("data") or []
            for item in data:
                if not isinstance(item, dict):
                    continue
                metadata = item.get("metadata")
                if isinstance(metadata, dict) and metadata.get(_RESERVED_KEY) == job.key:
                    logger.info(
                        "adopted batch %s for %s after an unsure create", item["id"], job.key
                    )
                    return item
            if not page.get("has_more") or not data:
                return None
            last = data[-1]
            created = last.get("created_at") if isinstance(last, dict) else None
            if isinstance(created, int | float) and created < oldest_useful:
                return None
            after = last.get("id") if isinstance(last, dict) else None
            if not after:
                return None
        return None

    async def _follow(self, job: Job) -> None:
        """Poll until the batch ends, reading partial results where the server offers them."""
        config = self.config
        assert job.batch_id is not None
        last_seen: tuple[object, ...] | None = None
        while True:
            batch = job.batch or {}
            status = batch.get("status")
            snapshot = (status, _counts_tuple(batch.get("request_counts")))
            if snapshot != last_seen:
                if last_seen is not None:
                    self._event("batch_progress", job)
                last_seen = snapshot
            if status in _TERMINAL:
                await self._collect(job, str(status))
                return
            if job.abandoned and not job.slots:
                await self._cancel_abandoned(job)
                return
            if config.fetch_partial_results and status != "validating":
                await self._read_partial(job, batch)
                if job.abandoned and not job.slots:
                    continue
            await self._idle(job, config.poll_interval_seconds)
            if job.abandoned and not job.slots:
                continue
            try:
                job.batch = await self.wire.call_json(
                    "GET", f"batches/{job.batch_id}", what="retrieve batch"
                )
                job.poll_trouble_since = None
            except NotFoundError as exc:
                self._lose(job, f"the batch disappeared while running: {exc.message}")
                return
            except APIError as exc:
                now = time.monotonic()
                if job.poll_trouble_since is None:
                    job.poll_trouble_since = now
                if now - job.poll_trouble_since > config.job_error_budget_seconds:
                    self._lose(
                        job,
                        f"gave up polling after {config.job_error_budget_seconds:g}s of "
                        f"errors: {exc}",
                    )
                    return
                logger.info("poll of %s failed (%s); will retry", job.batch_id, exc)

    async def _read_partial(self, job: Job, batch: dict[str, Any]) -> None:
        """Partial results (Doubleword): the files exist while the batch runs; read new lines."""
        output_id = batch.get("output_file_id")
        error_id = batch.get("error_file_id")
        if not output_id and not error_id:
            return
        job.partial = True
        try:
            if output_id:
                job.output_seen, _ = await self.wire.stream_lines(
                    str(output_id),
                    self._router(job),
                    offset=job.output_seen,
                    server_offset=True,
                )
            if error_id:
                job.error_seen, _ = await self.wire.stream_lines(
                    str(error_id),
                    self._router(job),
                    offset=job.error_seen,
                    server_offset=True,
                )
        except APIError as exc:
            logger.info("partial read of %s failed (%s); will retry", job.batch_id, exc)

    async def _cancel_abandoned(self, job: Job) -> None:
        if not job.cancel_sent:
            job.cancel_sent = True
            try:
                await self.wire.call_json(
                    "POST", f"batches/{job.batch_id}/cancel", what="cancel batch"
                )
                self._event("batch_cancelled", job, detail="every caller left")
            except APIError as exc:
                logger.warning("could not cancel abandoned batch %s: %s", job.batch_id, exc)
        self._finish(job)

    def _router(self, job: Job) -> Callable[[bytes], None]:
        slots = job.slots

        def route(line: bytes) -> None:
            custom_id = extract_custom_id(line)
            if custom_id is None:
                logger.warning("result line without custom_id in %s: %.200r", job.batch_id, line)
                return
            slot = slots.pop(custom_id, None)
            if slot is None:  # a caller that left, a duplicate line, or not ours
                return
            slot.outcome = line
            fire(slot.signal)
            if slot is self._driver:
                self._poke()

        return route

    async def _collect(self, job: Job, status: str) -> None:
        batch = job.batch or {}
        batch_id = job.batch_id
        if status == "failed":
            self._fail_batch(job, batch)
            self._event("batch_failed", job)
            self._finish(job)
            return
        route = self._router(job)
        server_offset = job.partial
        for file_key, seen_attr in (
            ("output_file_id", "output_seen"),
            ("error_file_id", "error_seen"),
        ):
            file_id = batch.get(file_key)
            if not file_id or not job.slots:
                continue
            seen, _ = await self.wire.stream_lines(
                str(file_id), route, offset=getattr(job, seen_attr), server_offset=server_offset
            )
            setattr(job, seen_attr, seen)
        if status == "expired":
            self._settle_all(
                job,
                lambda cid: BatchExpiredError(
                    "the batch's completion window elapsed before this request ran",
                    code="batch_expired",
                    custom_id=cid,
                    batch_id=batch_id,
                ),
            )
        elif status == "cancelled":
            self._settle_all(
                job,
                lambda cid: BatchCancelledError(
                    "the batch was cancelled before this request ran",
                    code="batch_cancelled",
                    custom_id=cid,
                    batch_id=batch_id,
                ),
            )
        else:
            self._settle_all(
                job,
                lambda cid: MissingResultError(
                    "the batch completed without any result line for this request",
                    custom_id=cid,
                    batch_id=batch_id,
                ),
            )
        kind: EventKind = {
            "expired": "batch_expired",
            "cancelled": "batch_cancelled",
        }.get(status, "batch_completed")  # type: ignore[assignment]
        self._event(kind, job)
        self._finish(job)

    def _fail_batch(self, job: Job, batch: dict[str, Any]) -> None:
        errors_obj = batch.get("errors")
        raw = errors_obj.get("data") if isinstance(errors_obj, dict) else None
        errors = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        by_custom_id: dict[str, dict[str, Any]] = {}
        for entry in errors:
            line = entry.get("line")
            if isinstance(line, int) and 1 <= line <= len(job.order):
                by_custom_id.setdefault(job.order[line - 1], entry)
        first = errors[0] if errors else {}
        summary = (
            "; ".join(
                f"{e.get('code')}: {e.get('message')}"
                + (f" (line {e['line']})" if e.get("line") else "")
                for e in errors[:5]
            )
            or "no reason given"
        )

        def error_for(custom_id: str) -> BaseException:
            own = by_custom_id.get(custom_id)
            if own is not None:
                message = f"the batch failed because of this request: {own.get('message')}"
                code = own.get("code")
            else:
                message = f"the batch failed: {summary}"
                code = first.get("code")
            return BatchFailedError(
                message,
                errors=errors,
                line_error=own,
                code=code if isinstance(code, str) else None,
                custom_id=custom_id,
                batch_id=job.batch_id,
            )

        self._settle_all(job, error_for)

    def _lose(self, job: Job, message: str) -> None:
        batch_id = job.batch_id
        self._settle_all(job, lambda cid: BatchLostError(message, custom_id=cid, batch_id=batch_id))
        self._event("batch_failed", job, detail=message)
        self._finish(job)

    def _settle_all(self, job: Job, make_error: Callable[[str], BaseException]) -> None:
        slots = job.slots
        while slots:
            custom_id, slot = slots.popitem()
            slot.outcome = make_error(custom_id)
            slot.line = None
            fire(slot.signal)
            if slot is self._driver:
                self._poke()

    def _finish(self, job: Job) -> None:
        self._release(job.queued)
        job.queued = 0
        job.phase = Phase.DONE
        job.batch = None
        self._jobs.pop(job.key, None)
        self._check_idle()

    def _event(self, kind: EventKind, job: Job, *, detail: str | None = None) -> None:
        if self.config.event_hook is None and not logger.isEnabledFor(logging.DEBUG):
            return
        batch = job.batch or {}
        counts = batch.get("request_counts")
        emit(
            self.config.event_hook,
            BatchEvent(
                kind=kind,
                batch_id=job.batch_id,
                endpoint=job.endpoint,
                model=job.model,
                status=batch.get("status"),
                requests=job.size,
                request_counts=dict(counts) if isinstance(counts, dict) else None,
                elapsed=time.monotonic() - job.flushed_at,
                detail=detail,
            ),
        )

    # -- shutdown ---------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Flush every lane now and wait (or drive) until every job is done."""
        self.flush_all()
        self._poke()
        while not self.idle():
            waiter = _Drained(self)
            self._drain_waiters.append(waiter)
            await self.wait(waiter)

    def close(self, reason: str) -> None:
        """Refuse new requests from now on."""
        if self.closed_reason is None:
            self.closed_reason = reason

    async def abort(self, reason: str) -> None:
        """Stop for good: cancel upstream batches we started (if configured), fail every waiter.

        Runs shielded and bounded by ``shutdown_timeout_seconds``; safe under cancellation.
        """
        self.close(reason)
        if self._tg is not None:
            # stop every job task now (polls, downloads): nobody will read what they fetch
            self._tg.cancel_scope.cancel()
        jobs = list(self._lanes.values()) + list(self._jobs.values())
        with anyio.move_on_after(self.config.shutdown_timeout_seconds, shield=True):
            if self.config.cancel_batches_on_exit:
                for job in jobs:
                    if job.create_unsure and job.batch_id is None:
                        try:
                            found = await self._find_batch(job)
                        except APIError:
                            found = None
                        if found is not None:
                            job.batch_id = str(found["id"])
                    if job.batch_id is not None and job.phase != Phase.DONE:
                        try:
                            await self.wire.call_json(
                                "POST",
                                f"batches/{job.batch_id}/cancel",
                                what="cancel batch",
                                max_retries=1,
                            )
                            self._event("batch_cancelled", job, detail="client stopped")
                        except APIError as exc:
                            logger.warning("could not cancel batch %s: %s", job.batch_id, exc)
        for job in jobs:
            batch_id = job.batch_id
            self._settle_all(
                job,
                lambda cid, batch_id=batch_id: ClientClosedError(  # type: ignore[misc]
                    f"{reason} before request {cid} got its answer"
                    + (f" (batch {batch_id})" if batch_id else "")
                ),
            )
            job.phase = Phase.DONE
        self._lanes.clear()
        self._jobs.clear()
        self._runnable.clear()
        self._queued = 0
        if self._space is not None:
            self._space.set()
        self._check_idle()
        for waiter in list(self._standalone_waiters):
            fire(waiter.signal)


class _Room(_Waiter):
    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def done(self) -> bool:
        return self.engine.has_room() or self.engine.closed_reason is not None


class _Gone(Exception):
    """Marks a slot whose caller left."""


_GONE = _Gone()


def _error_for_request(error: APIError, custom_id: str, batch_id: str | None) -> APIError:
    """A copy of a job-wide error for one caller, so no two callers share (and mutate) it."""
    own = type(error).__new__(type(error))
    own.__dict__.update(error.__dict__)
    own.args = error.args
    own.custom_id = custom_id
    own.batch_id = own.batch_id or batch_id
    own.__cause__ = error.__cause__
    return own


def is_transient(error: APIError) -> bool:
    """Worth trying again later: connection trouble, timeouts, 408/409/429 and 5xx."""
    if isinstance(error, APIConnectionError):
        return True
    if isinstance(error, APIStatusError) and error.custom_id is None:
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def _counts_tuple(counts: object) -> tuple[object, ...]:
    if isinstance(counts, dict):
        return (counts.get("total"), counts.get("completed"), counts.get("failed"))
    return ()
