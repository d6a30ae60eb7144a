"""The engine: intake stream → lanes → batch jobs, and the loop that runs them.

Three rooms, each in its own module, with narrow doors between them:

* :mod:`autobatcher._lanes` — the lane policy, synchronous and I/O-free;
* :mod:`autobatcher._runner` — one batch job's lifecycle (upload → create → poll → collect →
  settle) over its persistable :class:`~autobatcher._job.JobRecord`;
* :mod:`autobatcher._driver` — who drives: the batcher's own task, or the waiting callers.

What the engine itself owns is the flow between them. Requests arrive on a bounded anyio
memory object stream: a caller's ``create()`` encodes its line in its own task and
``send_nowait``s it (≈0.1 µs); only when the buffer is full does it wait, and then the stream
admits waiting senders one per freed slot, in FIFO order. The engine's loop receives with the
next lane window as its timeout, drains a burst with ``receive_nowait``, and stops receiving
while ``max_queued_requests`` requests are in lanes and not yet uploaded, so the buffer is the
backpressure. Jobs run as tasks of the driver's task group; results are routed to each
request's one-shot signal. The facade talks to the engine through its public methods only.

The engine also keeps the enqueued-token ledger: the estimated input tokens of our started
jobs, per model, against the quota (``max_enqueued_tokens``, or lower once the server
rejected a batch with ``token_limit_exceeded``). A flushed job waits in ``_runnable`` until
it fits; the lanes cut no batch above the quota.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import anyio
import anyio.abc

from ._config import BatcherConfig, estimate_tokens
from ._driver import RUN_MODE, Turns, Waiter
from ._errors import (
    APIError,
    BatchFailedError,
    ClientClosedError,
    EventLoopError,
    InternalError,
    RequestAbortedError,
)
from ._events import BatchEvent, EventHub
from ._job import GONE, Job, Phase, Slot
from ._journal import Journal
from ._lanes import Lanes
from ._runner import JobRunner, settle_all
from ._signals import Signal, fire, loop_token, new_signal, wait_for
from ._wire import Wire

__all__ = ["Engine"]

logger = logging.getLogger("autobatcher")


class Whereabouts(NamedTuple):
    """:meth:`Engine.whereabouts`: requests in lanes or the intake (``queued``), in flushed
    jobs not yet a batch upstream (``uploading``), waiting on batches upstream
    (``in_batches``), and those batches as (batch id, last status seen or None, lines,
    requests still waiting)."""

    queued: int
    uploading: int
    in_batches: int
    batches: list[tuple[str, str | None, int, int]]


class Engine:
    def __init__(
        self,
        config: BatcherConfig,
        wire: Wire,
        events: EventHub,
        journal: Journal | None = None,
    ) -> None:
        self.config = config
        self.wire = wire
        self.events = events
        self.journal = journal
        #: requests whose batch is still open upstream with nobody waiting (an earlier run's,
        #: or, with a journal, one a caller left), by custom_id: a recall attaches to it
        self._resumed: dict[str, Job] = {}
        #: with a journal, the custom_ids of client.map() requests in flight (one at a time)
        self.live_bulk_ids: set[str] = set()
        self._journal_loaded = False
        #: follow resumed jobs to the end even when nobody asks for them (journal collect)
        self.collect_resumed = False
        cancel_on_exit = config.cancel_batches_on_exit
        self._cancel_on_exit = journal is None if cancel_on_exit is None else cancel_on_exit
        self._prefix = f"ab{secrets.token_hex(4)}"
        self._seq = 0
        self._job_seq = 0
        # The intake: ``None`` is a wake-up, never a request.
        self._intake_tx, self._intake_rx = anyio.create_memory_object_stream[Slot | None](
            config.max_queued_requests
        )
        #: requests in the intake stream's buffer (it also carries wake-ups), for whereabouts()
        self._in_intake = 0
        #: the enqueued-token ledger, by model: estimated tokens of our started jobs, and the
        #: quota learned from the server's ``token_limit_exceeded`` answers
        self._enqueued: dict[str, int] = {}
        self._learned_quota: dict[str, int] = {}
        self._lanes = Lanes(config, self._new_job_key, self.token_cap)
        self._jobs: dict[str, Job] = {}  # flushed and not done, by key
        self._runnable: deque[Job] = deque()
        self._started: set[Job] = set()  # jobs whose task runs now
        self._runner = JobRunner(config, wire, events, self, journal)
        self._turns = Turns(self.drive, self._has_work)
        self._room_waiters: deque[_Room] = deque()  # standalone callers blocked on a full intake
        self._drain_waiters: list[_Drained] = []
        self._stopping = False
        self._receiving = False
        self._flush_requested = False
        self._wake: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._loop: object | None = None
        self.standalone = True
        self.closed_reason: str | None = None
        self.aborted = False

    # -- intake (in the caller's task) -----------------------------------------------------------

    def next_custom_id(self) -> str:
        self._seq += 1
        return f"{self._prefix}-{self._seq}"

    def _new_job_key(self) -> str:
        self._job_seq += 1
        return f"{self._prefix}-b{self._job_seq}"

    def offer(self, slot: Slot) -> bool:
        """Hand ``slot`` to the engine without waiting; False if the intake is full, or if
        callers blocked on it wait already (they go first)."""
        if self.closed_reason is not None:
            raise ClientClosedError(f"{self.closed_reason}: it cannot take new requests")
        if self.standalone:
            self._check_loop()
            if self._room_waiters:
                return False
        return self._send_nowait(slot)

    def _send_nowait(self, slot: Slot) -> bool:
        try:
            self._intake_tx.send_nowait(slot)
        except anyio.WouldBlock:
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ClientClosedError(self.closed_reason or "the client is closed") from None
        self._in_intake += 1
        return True

    async def send(self, slot: Slot) -> None:
        """Hand ``slot`` to the engine, waiting (in FIFO order) while the intake is full."""
        if not self.standalone:
            try:
                await self._intake_tx.send(slot)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise ClientClosedError(self.closed_reason or "the client is closed") from None
            # (the loop may have taken it already: the count is briefly one low, never wrong
            # once both have run)
            self._in_intake += 1
            return
        # Standalone: no engine task receives, so the blocked callers queue here and whoever
        # drives admits them, first come first served, one per freed place (_admit_waiting);
        # a newcomer's offer() waits behind them. A caller already waiting here when the
        # client closes is still answered (as in run mode, where its blocked send() completes
        # while close() drains).
        room = _Room(self, slot)
        self._room_waiters.append(room)
        self._admit_waiting()
        try:
            while not room.sent:
                if self.aborted:
                    raise RequestAbortedError(self.closed_reason or "the client stopped")
                await self._turns.wait(room)
        finally:
            if not room.sent:
                self._room_waiters.remove(room)

    def _admit_waiting(self) -> None:
        """Standalone: move blocked callers' requests into the intake while it has room."""
        room_waiters = self._room_waiters
        while room_waiters and self._send_nowait(room_waiters[0].slot):
            room = room_waiters.popleft()
            room.sent = True
            fire(room.signal)

    def _check_loop(self) -> None:
        current = loop_token()
        if self._loop is None:
            self._loop = current
        elif self._loop is not current:
            raise EventLoopError(
                "this client was first used in another event loop (an earlier asyncio.run() "
                "or trio.run()); its connections and requests belong to that loop. Create the "
                "client inside the loop that uses it, or use `async with BatchOpenAI() as "
                "client:` there"
            )

    # -- the journal ----------------------------------------------------------------------------

    async def load_journal(self) -> None:
        """Pick up what an earlier run left open (once): batches that exist, or may, upstream."""
        journal = self.journal
        if journal is None or self._journal_loaded:
            return
        state = await journal.load()
        if self._journal_loaded:  # another caller got here first
            return
        self._journal_loaded = True
        now = anyio.current_time()
        dead = []
        for record in state.open_jobs:
            if record.phase == Phase.SUBMITTED or (
                record.phase == Phase.UPLOADED and record.create_unsure
            ):
                # the schedule was on the old process's clock: poll at once
                record.next_poll_at = None
                job = Job(record=record, deadline=now, flushed_at=now, resumed=True)
                deadline = self.config.batch_deadline_seconds
                if deadline is not None and record.created_wall:
                    # (the old process's loop clock is gone: the wall clock says how long)
                    job.overdue_at = now + max(0.0, record.created_wall + deadline - time.time())
                self._jobs[record.key] = job
                self._runnable.append(job)
                for custom_id in record.order:
                    if custom_id not in journal.done:
                        self._resumed[custom_id] = job
                logger.info(
                    "resuming batch job %s (%s) from the journal", record.key, record.batch_id
                )
            else:
                # never reached a create: nothing runs upstream, its requests are free again
                record.phase = Phase.DONE
                dead.append(record)
        self.poke()
        # (only now an await: every resumed job is in place before any caller looks)
        for record in dead:
            await journal.save_job(record)

    def may_recall(self) -> bool:
        """Whether a request could be answered or attached from the journal: False once the
        journal is loaded and holds nothing of an earlier run (no await per request then)."""
        journal = self.journal
        if journal is None:
            return False
        return not self._journal_loaded or bool(journal.done) or bool(self._resumed)

    async def recall(self, slot: Slot) -> bool:
        """With a journal: answer ``slot`` from it, or attach it to its batch still running
        upstream. False if the request is new (it goes through the intake as usual)."""
        journal = self.journal
        assert journal is not None
        if self.standalone:
            self._check_loop()
        await self.load_journal()
        custom_id = slot.custom_id
        if custom_id in journal.done:
            line = await journal.result(custom_id)
            if line is not None:
                slot.outcome = line
                slot.line = None
                fire(slot.signal)
                return True
        return self.attach_resumed(slot)

    def answered(self, custom_id: str) -> bool:
        """With a loaded journal: whether it holds the answer of ``custom_id``."""
        journal = self.journal
        return journal is not None and (
            custom_id in journal.done or custom_id in journal.uncommitted
        )

    def attach_resumed(self, slot: Slot) -> bool:
        """Attach ``slot`` to its batch still open upstream with nobody waiting, if any."""
        custom_id = slot.custom_id
        job = self._resumed.get(custom_id)
        if job is not None and job.phase != Phase.DONE:
            slot.job = job
            if self.config.max_resubmits == 0:  # else kept: it may go into a new batch
                slot.line = None
            job.slots[custom_id] = slot
            self.poke()
            return True
        return False

    async def recall_answered(self, slots: Sequence[Slot]) -> list[Slot]:
        """Answer ``slots`` from the journal in one read (their answers are there, see
        ``answered``); returns those it no longer holds (pruned meanwhile): they are new."""
        journal = self.journal
        assert journal is not None
        lines = await journal.results_for([slot.custom_id for slot in slots])
        left = []
        for slot, line in zip(slots, lines, strict=True):
            if slot.outcome is not None:  # its caller left meanwhile
                continue
            if line is None:
                left.append(slot)
                continue
            slot.outcome = line
            slot.line = None
            fire(slot.signal)
        return left

    async def collect(self) -> None:
        """Wait until every job, this run's and the journal's earlier ones, is finished."""
        self.collect_resumed = True
        await self.load_journal()
        self.poke()
        while not self.idle():
            waiter = _Drained(self)
            self._drain_waiters.append(waiter)
            await self.wait(waiter)

    def withdraw(self, slot: Slot) -> None:
        """The caller of ``slot`` is gone (cancelled, timed out): undo what it added."""
        if slot.outcome is not None:
            return
        slot.outcome = GONE
        job = slot.job
        if job is None:  # still in the intake buffer: skipped when it is taken
            slot.line = None
            return
        if job.phase <= Phase.QUEUED:
            if self._lanes.withdraw(slot) and job.phase == Phase.QUEUED:
                self._jobs.pop(job.record.key, None)
                job.record.phase = Phase.DONE
            self.poke()  # the bound may have room again
        elif job.slots.pop(slot.custom_id, None) is not None:
            if self.journal is not None:
                # With a journal its batch goes on and its answer is kept, for a later run or
                # for this one: the same request asked again here attaches to the batch.
                self._resumed[slot.custom_id] = job
            elif not job.slots and self.config.cancel_abandoned_batches:
                job.abandoned = True
                job.interrupt()
        slot.line = None
        self._check_idle()

    def request_flush(self) -> None:
        """Flush every lane at once (after taking what the intake holds), not at its window:
        a map whose input has ended has nothing more to add."""
        self._flush_requested = True
        self.poke()

    def has_abandoned(self) -> bool:
        """Whether a batch every caller left is still to be cancelled upstream."""
        return any(job.abandoned for job in self._jobs.values())

    def whereabouts(self) -> Whereabouts:
        """Where the requests taken in stand now (see ``BulkProgress``): one pass over the
        running jobs, no I/O."""
        flushed = 0
        not_uploaded = 0
        waiting = 0
        batches: list[tuple[str, str | None, int, int]] = []
        for job in self._jobs.values():
            record = job.record
            if record.phase < Phase.SUBMITTED:
                size = job.size
                flushed += size
                if record.phase < Phase.UPLOADED:
                    not_uploaded += size
            elif record.phase == Phase.SUBMITTED and record.batch_id is not None:
                waiting += len(job.slots)
                status = job.batch.status if job.batch is not None else None
                batches.append((record.batch_id, status, job.size, len(job.slots)))
        # lanes.pending counts the requests not uploaded, in open lanes and flushed jobs
        queued = max(0, self._lanes.pending - not_uploaded) + max(0, self._in_intake)
        return Whereabouts(queued, flushed, waiting, batches)

    # -- waiting ---------------------------------------------------------------------------------

    async def wait(self, waiter: Waiter) -> None:
        """Wait until ``waiter`` is done, or (run mode) until its one-shot signal fires; in
        standalone mode, drive the engine in turn.

        Run mode waits for the signal once: a request's signal fires with its outcome, and a
        drain waiter's when the engine was idle, which a wake-up token arriving in the intake
        may undo before the waiter runs; awaiting the spent signal again returned at once and
        spun the loop forever. ``drain`` and ``collect`` look again with a new waiter.
        """
        if self.standalone:
            await self._turns.wait(waiter)
            return
        if not waiter.done():
            await wait_for(waiter.signal)

    # -- JobHost: what the runner tells us -------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def uploaded(self, job: Job) -> None:
        self._lanes.release(job)
        self.poke()

    def finished(self, job: Job) -> None:
        self._release_tokens(job)
        if job.resumed or self.journal is not None:
            for custom_id in job.record.order:
                if self._resumed.get(custom_id) is job:
                    del self._resumed[custom_id]
        self._lanes.release(job)
        self._jobs.pop(job.record.key, None)
        self._check_idle()
        self.poke()

    def settled(self, slot: Slot) -> None:
        if slot is self._turns.driver:
            self.poke()

    def resubmit(
        self,
        slots: list[Slot],
        reason: str,
        *,
        batch_id: str | None = None,
        counted: bool = True,
    ) -> int:
        """Put requests the server did not run back into lanes, to go in a new batch.

        The runner calls this only for requests the server has told us did not run (their
        batch expired or failed validation before them, or their line is a transient
        failure), each with its encoded line kept and within ``max_resubmits``; so nothing
        is paid twice. Each request leaves its old job before it joins a lane (the caller of
        the runner has taken it off ``job.slots``), so it is in exactly one job at any time.
        A request whose caller left meanwhile is skipped; once the engine is aborting, the
        requests get :class:`RequestAbortedError` instead. The lanes count them against
        ``max_queued_requests`` as new ones (the intake waits while that is exceeded).
        ``counted=False`` (a quota rejection) does not count against ``max_resubmits``.
        Returns how many went back.
        """
        now = anyio.current_time()
        count = 0
        moved: list[str] = []
        for slot in slots:
            if slot.outcome is not None:  # its caller left after the slot left its job
                continue
            if self.aborted or slot.line is None:
                # (the runner never hands over a request without its line: defensive)
                slot.outcome = (
                    RequestAbortedError(
                        f"{self.closed_reason or 'the client stopped'} before request "
                        f"{slot.custom_id} got its answer"
                    )
                    if self.aborted
                    else InternalError(f"request {slot.custom_id} lost its line; please report it")
                )
                slot.line = None
                fire(slot.signal)
                self.settled(slot)
                continue
            if counted:
                slot.resubmits += 1
            slot.job = None
            slot.origin = batch_id
            self._lanes.add(slot, now)
            moved.append(slot.custom_id)
            count += 1
        if count:
            if self.journal is not None:
                self.journal.note_resubmission(moved, reason, batch_id)
            first = slots[0]
            logger.info(
                "resubmitting %d request(s) of batch %s in a new batch: %s",
                count,
                batch_id,
                reason,
            )
            self.events.emit(
                BatchEvent(
                    kind="batch_resubmitted",
                    batch_id=batch_id,
                    endpoint=first.endpoint,
                    model=first.model,
                    requests=count,
                    detail=reason,
                    custom_ids=tuple(moved),
                )
            )
            self.poke()
        return count

    # -- the enqueued-token ledger ---------------------------------------------------------------

    def token_cap(self, model: str) -> int | None:
        """The enqueued-token quota of ``model`` we keep under: ``max_enqueued_tokens``, or
        lower once the server rejected a batch over its quota (``None``: none known)."""
        configured = self.config.max_enqueued_tokens
        learned = self._learned_quota.get(model)
        if learned is None:
            return configured
        return learned if configured is None else min(configured, learned)

    def quota_rejected(self, job: Job) -> bool:
        """The server failed ``job``'s batch over its enqueued-token quota: nothing of it ran.

        What the server holds of ours is the other started jobs of the model; with this
        job's own estimate on top it was too much, so the quota is below their sum. Keeping
        under that from now on makes the resubmitted requests wait until enough of our
        batches finish; when nothing else of ours was enqueued, the job alone was over, and
        its requests go into batches of half its size. The learned quota only ever goes
        down (for the life of the client), so this ends: at worst a request alone is over
        it and gets its error.

        Returns whether the requests should go again: not when the job was one request and
        nothing else of ours was enqueued (nothing to wait for, nothing to split), so its
        caller gets the server's error.
        """
        model = job.record.model
        tokens = job.reserved or estimate_tokens(job.nbytes)
        if not tokens:
            return True  # (a job of an earlier run: its size is unknown here)
        others = self._enqueued.get(model, 0) - job.reserved
        if others <= 0 and job.size <= 1:
            return False
        # With nothing else of ours enqueued the job alone is over: halve (a few rejections
        # at most, whatever the true quota), rather than shave one token at a time.
        quota = others + tokens - 1 if others > 0 else tokens // 2
        current = self.token_cap(model)
        if current is None or quota < current:
            self._learned_quota[model] = quota
            logger.warning(
                "the server's enqueued-token quota for %s is below %d estimated tokens: "
                "keeping under %d from now on (%d held by our running batches)",
                model or "this endpoint",
                others + tokens,
                quota,
                others,
            )
        return True

    def _reserve_tokens(self, job: Job) -> bool:
        """Whether ``job`` may start now as far as the enqueued-token quota goes; if so its
        estimate is added to the ledger until it finishes. A job over the quota alone (the
        quota was learned after it was flushed) goes back into lanes, to be split."""
        if job.reserved:
            return True  # started before (a hand-over): it holds its place
        model = job.record.model
        tokens = estimate_tokens(job.nbytes)
        cap = self.token_cap(model)
        record = job.record
        enqueued = self._enqueued.get(model, 0)
        # (only a job not uploaded yet waits: one that is, or may be, upstream goes on)
        if cap is not None and record.phase == Phase.QUEUED and not record.upload_unsure:
            if tokens > cap:
                self._split(job, cap)
                return False
            if enqueued + tokens > cap:
                return False  # it waits until our running batches leave room
        job.reserved = tokens
        self._enqueued[model] = enqueued + tokens
        return True

    def _release_tokens(self, job: Job) -> None:
        if job.reserved:
            model = job.record.model
            self._enqueued[model] = self._enqueued.get(model, 0) - job.reserved
            job.reserved = 0
            self.poke()

    def _split(self, job: Job, cap: int) -> None:
        """Put a flushed, not yet uploaded job's requests back into lanes (which now cut
        batches under ``cap``); a request over ``cap`` alone gets its error."""
        self._lanes.release(job)
        self._jobs.pop(job.record.key, None)
        job.record.phase = Phase.DONE
        now = anyio.current_time()
        slots = list(job.slots.values())
        job.slots.clear()
        job.nbytes = job.inputs = 0
        for slot in slots:
            if slot.outcome is not None:
                continue
            tokens = estimate_tokens(len(slot.line or b""))
            if tokens > cap:
                message = (
                    f"this request alone is estimated at {tokens} input tokens, more than the "
                    f"server's enqueued-token quota for {slot.model!r} allows (under {cap + 1} "
                    "as learned from its token_limit_exceeded answers)"
                )
                slot.outcome = BatchFailedError(
                    message,
                    errors=[{"code": "token_limit_exceeded", "message": message, "line": None}],
                    code="token_limit_exceeded",
                    custom_id=slot.custom_id,
                )
                slot.line = None
                fire(slot.signal)
                self.settled(slot)
                continue
            slot.job = None
            self._lanes.add(slot, now)
        logger.info(
            "batch job %s (%d requests) is over the enqueued-token quota alone: split",
            job.record.key,
            len(slots),
        )
        self._check_idle()

    # -- the loop --------------------------------------------------------------------------------

    def idle(self) -> bool:
        """No request anywhere: not in the intake, not in a lane, not in a job.

        A job resumed from the journal that nobody in this run waits for does not count
        (unless collecting): it stays open in the journal for the next run.
        """
        if self._lanes:
            return False
        if self._jobs and (
            self.collect_resumed or any(not j.resumed or j.slots for j in self._jobs.values())
        ):
            return False
        stats = self._intake_rx.statistics()
        return not stats.current_buffer_used and not stats.tasks_waiting_send

    def _has_work(self) -> bool:
        return not self.idle() or bool(self._drain_waiters)

    async def run(self, until: anyio.Event) -> None:
        """Run mode: drive the engine from the batcher's own task until ``until`` is set."""
        self.standalone = False
        self._turns.driver = RUN_MODE
        try:
            await self.load_journal()
            await self.drive(until.is_set)
        finally:
            self._turns.driver = None

    def poke(self) -> None:
        """Wake the loop (a job ended, room appeared, the driver's answer came)."""
        if self._receiving:
            # The loop waits in receive(): a wake-up goes to it through the stream (directly,
            # or through the buffer if receive() has not parked yet; skipped when taken).
            self._receiving = False
            try:
                self._intake_tx.send_nowait(None)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        elif self._wake is not None:
            self._wake.set()

    async def drive(self, until: Callable[[], bool]) -> None:
        """Run the engine's work until ``until()`` holds, then stop every job at a safe point."""
        self._stopping = False
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                while not until():
                    self._take_intake()
                    next_deadline = self._lanes.due(anyio.current_time())
                    if self.closed_reason is not None or self._flush_requested:
                        self._flush_requested = False
                        self._lanes.flush_all(anyio.current_time())
                    self._queue_flushed()
                    self._start_runnable(tg)
                    if until():
                        break
                    await self._wait_for_work(next_deadline)
                # graceful hand-over: interrupt sleeps; HTTP calls in flight finish first
                self._stopping = True
                for job in self._started:
                    job.interrupt()
        finally:
            self._tg = None
            self._wake = None
            self._receiving = False
            self._stopping = False

    def _take_intake(self) -> None:
        """Move a burst from the intake stream into lanes, while the bound allows. Only the
        engine's loop calls it (see ``drain`` for why)."""
        lanes = self._lanes
        receive_nowait = self._intake_rx.receive_nowait
        now = anyio.current_time()
        taken = 0
        while lanes.has_room():
            try:
                slot = receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            taken += 1
            if slot is None:
                continue
            self._in_intake -= 1
            if slot.outcome is None:
                lanes.add(slot, now)
        if taken and self._drain_waiters:
            self._check_idle()
        if self._room_waiters:
            self._admit_waiting()

    def _queue_flushed(self) -> None:
        for job in self._lanes.take_flushed():
            if job.phase == Phase.DONE:
                continue
            self._jobs[job.record.key] = job
            self._runnable.append(job)

    async def _wait_for_work(self, next_deadline: float) -> None:
        timeout = max(0.0, next_deadline - anyio.current_time())
        if self._lanes.has_room():
            self._receiving = True
            try:
                with anyio.move_on_after(timeout):
                    slot = await self._intake_rx.receive()
                    if slot is not None:
                        self._in_intake -= 1
                    if slot is not None and slot.outcome is None:
                        self._lanes.add(slot, anyio.current_time())
                    elif self._drain_waiters:
                        self._check_idle()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                await anyio.sleep(timeout if math.isfinite(timeout) else 0)
            finally:
                self._receiving = False
        else:
            self._wake = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._wake.wait()
            self._wake = None

    def _can_start(self) -> bool:
        cap = self.config.max_batches_in_flight
        return cap is None or len(self._started) < cap

    def _start_runnable(self, tg: anyio.abc.TaskGroup) -> None:
        waiting: deque[Job] = deque()  # held back by the enqueued-token quota, in order
        while self._runnable and self._can_start():
            job = self._runnable.popleft()
            if job.phase == Phase.DONE or job in self._started:
                continue
            if not self._reserve_tokens(job):
                if job.record.key in self._jobs:  # (not split into new lanes)
                    waiting.append(job)
                continue
            self._started.add(job)
            tg.start_soon(self._run_job, job, name=f"autobatcher job {job.record.key}")
        if waiting:
            waiting.extend(self._runnable)
            self._runnable = waiting

    async def _run_job(self, job: Job) -> None:
        try:
            await self._runner.run(job)
        finally:
            self._started.discard(job)
            if job.phase != Phase.DONE and job.record.key in self._jobs:
                self._runnable.append(job)
            self.poke()

    def _check_idle(self) -> None:
        if self._drain_waiters and self.idle():
            for waiter in self._drain_waiters:
                fire(waiter.signal)
            self._drain_waiters.clear()
            self.poke()

    # -- shutdown --------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Flush every lane now and wait (or drive) until every request has its answer.

        The intake is left to the loop (which flushes what it takes once closed): only the
        loop may take from it, because a wake-up marker taken anywhere else is lost to a loop
        about to park in ``receive()``, which then sleeps through the close (until its next
        deadline, or for ever with none).
        """
        self._lanes.flush_all(anyio.current_time())
        self._queue_flushed()
        self.poke()
        while not self.idle():
            waiter = _Drained(self)
            self._drain_waiters.append(waiter)
            await self.wait(waiter)

    def close(self, reason: str) -> None:
        """Refuse new requests from now on; what was accepted is still answered."""
        if self.closed_reason is None:
            self.closed_reason = reason

    async def abort(self, reason: str) -> None:
        """Stop for good: cancel upstream batches we started (if configured), fail every waiter.

        Runs shielded and bounded by ``shutdown_timeout_seconds``; safe under cancellation.
        """
        self.close(reason)
        self.aborted = True
        if self._tg is not None:
            # stop every job task now (polls, downloads): nobody will read what they fetch
            self._tg.cancel_scope.cancel()
        jobs = self._lanes.clear() + list(self._jobs.values())
        with anyio.move_on_after(self.config.shutdown_timeout_seconds, shield=True):
            if self._cancel_on_exit:
                await self._cancel_upstream(jobs)
        for job in jobs:
            batch_id = job.record.batch_id
            settle_all(
                job,
                lambda cid, batch_id=batch_id: RequestAbortedError(  # type: ignore[misc]
                    f"{reason} before request {cid} got its answer"
                    + (f" (batch {batch_id})" if batch_id else "")
                ),
                self,
            )
            job.record.phase = Phase.DONE
            job.release_spill()
        # requests still in the intake (and callers blocked sending) get the same answer
        while True:
            try:
                slot = self._intake_rx.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if slot is not None:
                self._in_intake -= 1
            if slot is not None and slot.outcome is None:
                slot.outcome = RequestAbortedError(f"{reason} before request {slot.custom_id} ran")
                slot.line = None
                fire(slot.signal)
        self._intake_rx.close()
        self._jobs.clear()
        self._runnable.clear()
        self._check_idle()
        for waiter in self._drain_waiters:
            fire(waiter.signal)
        self._drain_waiters.clear()
        self._turns.wake_all()

    async def _cancel_upstream(self, jobs: list[Job]) -> None:
        for job in jobs:
            record = job.record
            if record.create_unsure and record.batch_id is None:
                try:
                    found = await self._runner.find_batch(job)
                except APIError:
                    found = None
                if found is not None:
                    record.batch_id = found.id
            if record.batch_id is not None and record.phase != Phase.DONE:
                try:
                    await self.wire.cancel_batch(record.batch_id, max_retries=1)
                    self.events.emit(
                        BatchEvent(
                            kind="batch_cancelled",
                            batch_id=record.batch_id,
                            endpoint=record.endpoint,
                            model=record.model,
                            requests=job.size,
                            detail="client stopped",
                        )
                    )
                except APIError as exc:
                    logger.warning("could not cancel batch %s: %s", record.batch_id, exc)


class _Drained:
    """Waits until the engine has no request left anywhere."""

    __slots__ = ("engine", "signal")

    def __init__(self, engine: Engine) -> None:
        self.signal: Signal = new_signal()
        self.engine = engine

    def done(self) -> bool:
        return self.engine.aborted or self.engine.idle()


class _Room:
    """A standalone caller waiting for room in a full intake, with its request."""

    __slots__ = ("engine", "sent", "signal", "slot")

    def __init__(self, engine: Engine, slot: Slot) -> None:
        self.signal: Signal = new_signal()
        self.engine = engine
        self.slot = slot
        self.sent = False

    def done(self) -> bool:
        return self.sent or self.engine.aborted
