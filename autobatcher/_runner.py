"""Running one batch job: upload → create → poll → collect → settle.

The runner advances a :class:`~autobatcher._job.Job` from whatever phase its record says, so
whoever drives next (another caller in standalone mode, another run) picks it up there. Before
every call with a side effect (upload, create) the record is marked *unsure*; an attempt that
finds the flag set looks the file or batch up first, so nothing is paid twice.

What it needs from the engine is the narrow :class:`JobHost` door: whether a hand-over is
under way or the client aborted, three notifications (uploaded, finished, a request settled),
and ``resubmit``: requests the server says did not run (an expired batch, a batch failed
over other lines, a cancel we did not ask for) or failed transiently (429, 5xx,
``request_timeout``) leave their job and go back into a lane for a new batch, each at most
``max_resubmits`` times; anything else is an answer, delivered as it is. A batch the server
fails over its enqueued-token quota ran nothing: ``quota_rejected`` tells the engine (which
learns the quota and holds new batches until ours leave room), and its requests go again
without using up their count. A batch still unfinished ``batch_deadline_seconds`` after its
creation is cancelled by the watchdog: unlike a cancel meant to stop (every caller left, the
client stopped), what it did not run goes on. With ``on_expired="realtime"``, what an
expired or overdue batch did not run is answered by the real-time endpoint instead
(:mod:`autobatcher._realtime`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from ._config import BatcherConfig
from ._errors import (
    APIError,
    BatchCancelledError,
    BatchExpiredError,
    BatchFailedError,
    BatchLostError,
    InternalError,
    MissingResultError,
    NotFoundError,
)
from ._events import BatchEvent, EventHub, EventKind
from ._job import Job, LineSpill, Phase, Slot
from ._journal import REALTIME, Journal
from ._jsonl import read_result_head
from ._realtime import Escalation
from ._retry import Spell
from ._signals import fire
from ._wire import Checkpoint, LineSink, ResumeMark, Wire, maybe_sent
from .types import Batch, FileObject

__all__ = ["RESERVED_METADATA_KEY", "JobHost", "JobRunner", "Stop"]

logger = logging.getLogger("autobatcher")

_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: a batch in one of these was accepted: it can no longer be rejected over the quota
_PAST_VALIDATION = frozenset({"in_progress", "finalizing", "cancelling"})
RESERVED_METADATA_KEY = "autobatcher_key"
#: how far back (seconds) the idempotency look-up reads, before the first create attempt
_LOOKUP_SLACK = 600.0
#: with a journal, results are committed in transactions of about this many bytes (or lines)
_COMMIT_BYTES = 4 << 20
_COMMIT_LINES = 20_000
#: lines of at most this many bytes are written to their spill file on the event loop; more
#: in a worker thread
_SPILL_ON_LOOP_BYTES = 1 << 20
#: longest wait between two looks at an uploaded file that is not processed yet
_FILE_POLL_SECONDS = 5.0
#: ("": a server that shows no status has nothing to wait for)
_FILE_READY = frozenset({"processed", ""})
_FILE_BROKEN = frozenset({"error", "failed", "deleted"})


class Stop(Exception):
    """A job reached a safe point while its driver is handing over."""


class JobHost(Protocol):
    @property
    def stopping(self) -> bool:
        """A hand-over is under way: stop at the next safe point."""
        ...

    def uploaded(self, job: Job) -> None:
        """The job's lines are upstream: they no longer count against the intake bound."""
        ...

    def finished(self, job: Job) -> None:
        """The job is over (every request settled or abandoned)."""
        ...

    def settled(self, slot: Slot) -> None:
        """``slot`` was just given its outcome."""
        ...

    @property
    def aborted(self) -> bool:
        """The client stopped for good (and cancels its batches on purpose)."""
        ...

    def resubmit(
        self,
        slots: list[Slot],
        reason: str,
        *,
        batch_id: str | None = None,
        counted: bool = True,
    ) -> int:
        """Put requests that did not run (and have left their job) into a new batch."""
        ...

    def quota_rejected(self, job: Job) -> bool:
        """The server failed the job's batch over its enqueued-token quota: whether its
        requests should go again."""
        ...


class JobRunner:
    def __init__(
        self,
        config: BatcherConfig,
        wire: Wire,
        events: EventHub,
        host: JobHost,
        journal: Journal | None = None,
    ):
        self._config = config
        self._wire = wire
        self._events = events
        self._host = host
        self._journal = journal

    # -- the task ---------------------------------------------------------------------------

    async def run(self, job: Job) -> None:
        """Advance ``job`` until it is done or its driver hands over; never raises but Cancelled."""
        try:
            await self._advance_patiently(job)
        except Stop:
            pass
        except anyio.get_cancelled_exc_class():
            # The driver was cancelled mid-call; the unsure flags are already set, so the next
            # driver looks the file or batch up before sending anything again.
            if job.phase == Phase.UPLOADING:
                job.record.phase = Phase.QUEUED
            raise
        except APIError as exc:
            if job.phase == Phase.SUBMITTED and self._wire.policy.is_transient(exc):
                self._lose(
                    job,
                    f"gave up polling the batch after "
                    f"{self._config.job_error_budget_seconds:g}s of errors: {exc}",
                )
                return
            # An expected failure (the server said no, or could not be reached): one line.
            logger.warning("batch job %s (%d requests) failed: %s", job.record.key, job.size, exc)
            failure = exc
            self._settle_all(job, lambda cid: failure.for_request(cid, job.record.batch_id))
            self._event("batch_failed", job, detail=str(exc))
            self._finish(job)
        except Exception as exc:
            logger.exception("batch job %s: internal error", job.record.key)
            error = InternalError(
                f"internal error in autobatcher ({type(exc).__name__}: {exc}); please report it"
            )
            error.__cause__ = exc
            self._settle_all(job, lambda cid: error.for_request(cid, job.record.batch_id))
            self._finish(job)
        if self._journal is not None and job.phase == Phase.DONE:
            with anyio.CancelScope(shield=True):
                await self._journal.save_job(job.record)

    async def _advance_patiently(self, job: Job) -> None:
        """Advance the job; a transient failure of a step is retried within the job's budget.

        Before anything of the job exists upstream, one call's own retries are all the patience
        there is: a wrong base_url or a dead server reaches the callers in seconds. Once the
        file is uploaded (or may be), the step is tried again from the phase it reached, until
        ``job_error_budget_seconds`` of one spell of trouble.
        """
        spell = Spell(self._wire.policy)
        while True:
            try:
                await self._advance(job)
            except APIError as exc:
                record = job.record
                if record.phase == Phase.UPLOADING:
                    record.phase = Phase.QUEUED
                if record.phase < Phase.UPLOADED and not record.upload_unsure:
                    raise
                delay = spell.next_delay(record.phase, exc)
                if delay is None:
                    raise
                if spell.first:
                    logger.warning(
                        "batch job %s: %s; trying again for up to %gs",
                        record.key,
                        exc,
                        self._config.job_error_budget_seconds,
                    )
                else:
                    logger.info("batch job %s: %s; trying again in %.2fs", record.key, exc, delay)
                await self._idle(job, anyio.current_time() + delay * self._wire.policy.sleep_scale)
            else:
                return

    async def _idle(self, job: Job, until: float) -> None:
        """Sleep until ``until`` (loop clock); cut short by hand-over or abandonment."""
        if self._host.stopping:
            raise Stop
        with anyio.CancelScope() as scope:
            job.idle_scope = scope
            try:
                await anyio.sleep_until(until)
            finally:
                job.idle_scope = None
        if self._host.stopping:
            raise Stop

    def _checkpoint(self) -> None:
        if self._host.stopping:
            raise Stop

    async def _advance(self, job: Job) -> None:
        record = job.record
        if record.phase == Phase.QUEUED:
            await self._upload(job)
        if record.phase == Phase.UPLOADED:
            await self._create(job)
        if record.phase == Phase.SUBMITTED:
            await self._follow(job)

    async def _upload(self, job: Job) -> None:
        record = job.record
        if not job.slots:
            self._finish(job)
            return
        wire = self._wire
        filename = f"{record.key}.jsonl"
        record.phase = Phase.UPLOADING
        order = list(job.slots)
        lines = [slot.line or b"" for slot in job.slots.values()]
        nbytes = sum(map(len, lines))

        async def find_file() -> FileObject | None:
            return await wire.find_file(filename, nbytes)

        journal = self._journal
        if journal is not None:
            # write-ahead: the requests this file will carry, before anything is sent
            record.order = order
            record.upload_unsure = True
            await journal.save_job(record, custom_ids=order)
        uploaded = await find_file() if record.upload_unsure else None
        # Pessimistic until the answer is in hand: a failure or cancellation from here on leaves
        # the job unsure, and the next attempt looks before uploading again.
        record.upload_unsure = True
        if uploaded is None:
            try:
                uploaded = await wire.upload_batch_file(
                    filename, lines, nbytes, reconcile=find_file
                )
            except APIError as exc:
                record.upload_unsure = maybe_sent(exc)
                raise
        record.file_id = uploaded.id
        record.order = order
        record.upload_unsure = False
        record.phase = Phase.UPLOADED
        # A bulk request's line moves to disk now (read back only if it must go again); other
        # lines stay until the batch is accepted (see _release_lines). With max_resubmits=0
        # (and no escalation) nothing is ever sent again: no line is kept at all.
        to_spill: list[Slot] = []
        keep_none = self._config.max_resubmits == 0 and self._config.on_expired != "realtime"
        for slot in job.slots.values():
            if keep_none:
                slot.line = None
            elif slot.spills_line and slot.line is not None:
                to_spill.append(slot)
        self._host.uploaded(job)
        del lines
        if to_spill:
            await self._spill(job, to_spill)
        if journal is not None:
            await journal.save_job(record)  # the file id, before a batch is created from it
        self._checkpoint()

    async def _spill(self, job: Job, slots: list[Slot]) -> None:
        """Move the lines of ``slots`` (just uploaded) to a temporary file, written in a worker
        thread; a request settled or withdrawn meanwhile is left as it is. If the file cannot
        be written, the lines stay in memory."""
        lines = [slot.line or b"" for slot in slots]
        try:
            if sum(map(len, lines)) <= _SPILL_ON_LOOP_BYTES:
                spill = LineSpill(lines)  # (a write to the page cache: well under a ms)
            else:
                spill = await anyio.to_thread.run_sync(LineSpill, lines)
        except OSError as exc:
            logger.info("batch job %s: lines kept in memory (%s)", job.record.key, exc)
            return
        job.release_spill()
        job.spill = spill
        for index, slot in enumerate(slots):
            if slot.line is not None and slot.outcome is None:
                slot.line = None
                slot.spilled = index

    async def _create(self, job: Job) -> None:
        record = job.record
        config = self._config
        provider = self._wire.provider
        if provider.wait_file_processed and not record.create_unsure:
            await self._await_processed(job)
        metadata = dict(config.batch_metadata or {})
        metadata[RESERVED_METADATA_KEY] = record.key
        body: dict[str, object] = {
            "input_file_id": record.file_id,
            "endpoint": provider.batch_endpoint(record.endpoint),
            "completion_window": config.completion_window,
            "metadata": metadata,
        }
        if provider.file_expiry_seconds is not None:
            # Output and error files count against the provider's file cap too.
            body["output_expires_after"] = {
                "anchor": "created_at",
                "seconds": provider.file_expiry_seconds,
            }

        async def find_batch() -> Batch | None:
            return await self.find_batch(job)

        if not record.created_wall:
            record.created_wall = time.time()
        # A create that may have happened (an answer lost, a crash) is looked up before
        # anything else: such a batch runs, and is paid for, whether or not anyone still waits.
        batch = await find_batch() if record.create_unsure else None
        if batch is None:
            if not job.slots:
                # nobody waits any more and nothing runs upstream: pay for nothing
                self._finish(job)
                await self._discard_file(job)
                return
            record.create_unsure = True  # as for the upload: unsure until the id is in hand
            if self._journal is not None:
                await self._journal.save_job(record)  # a create may happen from here on
            try:
                batch = await self._wire.create_batch(body, reconcile=find_batch)
            except APIError as exc:
                record.create_unsure = maybe_sent(exc)
                raise
        record.batch_id = batch.id
        job.batch = batch
        record.create_unsure = False
        record.phase = Phase.SUBMITTED
        now = anyio.current_time()
        record.next_poll_at = now + config.poll_interval_seconds
        if config.batch_deadline_seconds is not None:
            job.overdue_at = now + config.batch_deadline_seconds
        if self._journal is not None:
            await self._journal.save_job(record)  # the batch id
        if self._events.wanted:
            carried, detail = self._carried(job)
            self._event("batch_submitted", job, detail=detail, custom_ids=carried)
        self._checkpoint()

    @staticmethod
    def _carried(job: Job) -> tuple[list[str], str | None]:
        """The resubmitted requests a new batch carries, and what its ``batch_submitted``
        event says of them (so events alone tell where every resubmitted request went)."""
        carried = [slot for slot in job.slots.values() if slot.origin is not None]
        if not carried:
            return [], None
        origins = Counter(slot.origin for slot in carried)
        detail = "carries " + ", ".join(
            f"{count} request(s) resubmitted from {origin}" for origin, count in origins.items()
        )
        return [slot.custom_id for slot in carried], detail

    async def _await_processed(self, job: Job) -> None:
        """Wait until the uploaded file is ``processed`` (Azure: a batch cannot use it before).

        A file the server could not process fails the job's requests with its reason.
        """
        record = job.record
        assert record.file_id is not None
        interval = min(self._config.poll_interval_seconds, _FILE_POLL_SECONDS)
        while True:
            uploaded = await self._wire.retrieve_file(record.file_id)
            status = (uploaded.status or "").lower()
            if status in _FILE_READY:
                return
            if status in _FILE_BROKEN:
                await self._discard_file(job)
                raise BatchFailedError(
                    f"the server could not process the uploaded batch file {record.file_id} "
                    f"(status {uploaded.status!r}): {uploaded.status_details or 'no reason given'}",
                    errors=[],
                    code="file_not_processed",
                )
            await self._idle(job, anyio.current_time() + interval)

    async def _delete_consumed_files(self, job: Job, batch: Batch | None) -> None:
        """Delete the job's input, output and error files (providers that cap file counts).

        Best effort: a file that cannot be deleted is logged, and expires on its own where we
        uploaded it with an expiry.
        """
        if not self._wire.provider.delete_consumed_files:
            return
        ids = [job.record.file_id]
        if batch is not None:
            ids += [batch.output_file_id, batch.error_file_id]
        for file_id in dict.fromkeys(i for i in ids if i):
            try:
                await self._wire.delete_file(file_id)
            except APIError as exc:
                logger.info("could not delete consumed file %s: %s", file_id, exc)

    async def _discard_file(self, job: Job) -> None:
        if job.record.file_id is None:
            return
        try:
            await self._wire.delete_file(job.record.file_id)
        except APIError as exc:
            logger.info("could not delete unused file %s: %s", job.record.file_id, exc)

    async def find_batch(self, job: Job) -> Batch | None:
        """Look our idempotency key up among the newest batches (after an ambiguous create)."""
        record = job.record
        found = await self._wire.find_batch(
            RESERVED_METADATA_KEY,
            record.key,
            not_older_than=record.created_wall - _LOOKUP_SLACK,
        )
        if found is not None:
            logger.info("adopted batch %s for %s after an unsure create", found.id, record.key)
        return found

    async def _follow(self, job: Job) -> None:
        """Poll until the batch ends, reading partial results where the server offers them.

        The time of the next poll lives in the record: a driver that hands over and the one
        that takes over keep the same schedule.
        """
        config = self._config
        record = job.record
        assert record.batch_id is not None
        last_seen: tuple[object, ...] | None = None
        while True:
            batch = job.batch
            status = batch.status if batch is not None else None
            snapshot = (status, _counts(batch))
            if snapshot != last_seen:
                if last_seen is not None:
                    kind: EventKind = (
                        "batch_finalizing" if status == "finalizing" else "batch_progress"
                    )
                    self._event(kind, job)
                last_seen = snapshot
                if status in _PAST_VALIDATION:
                    self._release_lines(job)
                if status is not None and status != record.status:
                    record.status = status
                    if self._journal is not None and status not in _TERMINAL:
                        await self._journal.save_job(record)  # ``finalizing`` shows there
            if batch is not None and status in _TERMINAL:
                await self._collect(job, batch)
                return
            if (
                job.overdue_at is not None
                and not record.cancel_sent
                and anyio.current_time() >= job.overdue_at
            ):
                await self._cancel_overdue(job)
                continue
            if job.abandoned and not job.slots:
                await self._cancel_abandoned(job)
                return
            if (
                batch is not None
                and config.fetch_partial_results
                and self._wire.provider.partial_results
                and status != "validating"
            ):
                await self._read_partial(job, batch)
                if job.abandoned and not job.slots:
                    continue
            if record.next_poll_at is None:
                # resumed from the journal: the old schedule was on another process's clock,
                # and the batch may have ended long ago; ask now, not a poll interval later
                record.next_poll_at = anyio.current_time()
            wake_at = record.next_poll_at
            if job.overdue_at is not None and not record.cancel_sent:
                wake_at = min(wake_at, job.overdue_at)
            await self._idle(job, wake_at)
            if anyio.current_time() < record.next_poll_at:
                continue  # woken by the watchdog's deadline, not for a poll
            if job.abandoned and not job.slots:
                continue
            try:
                job.batch = await self._wire.retrieve_batch(record.batch_id)
            except NotFoundError as exc:
                self._lose(job, f"the batch disappeared while running: {exc.message}")
                return
            # (after a failed poll the job's retry delay decides when to try again)
            record.next_poll_at = anyio.current_time() + config.poll_interval_seconds

    async def _read_partial(self, job: Job, batch: Batch) -> None:
        """Partial results (Doubleword): the files exist while the batch runs; read new lines."""
        output_id = batch.output_file_id
        error_id = batch.error_file_id
        if not output_id and not error_id:
            return
        record = job.record
        record.partial = True
        try:
            await self._read_partial_files(job, output_id, error_id)
        except APIError as exc:
            logger.info("partial read of %s failed (%s); will retry", record.batch_id, exc)
        finally:
            self._resubmit_taken(job)

    async def _read_partial_files(
        self, job: Job, output_id: str | None, error_id: str | None
    ) -> None:
        await self._read_files(job, output_id, error_id, server_offset=True)

    async def _read_files(
        self, job: Job, output_id: str | None, error_id: str | None, *, server_offset: bool
    ) -> None:
        """Feed the output file, then the error file, to the job's reader, each from the
        offset the record holds (the lines already routed are never read twice)."""
        record = job.record
        for file_id, offset_field, mark_field in (
            (output_id, "output_seen", "output_mark"),
            (error_id, "error_seen", "error_mark"),
        ):
            if not file_id:
                continue
            route, checkpoint = self._reader(job, offset_field, mark_field)
            seen, _ = await self._wire.stream_lines(
                str(file_id),
                route,
                offset=getattr(record, offset_field),
                server_offset=server_offset,
                checkpoint=checkpoint,
                resume=getattr(record, mark_field),
            )
            setattr(record, offset_field, seen)
            setattr(record, mark_field, None)

    def _release_lines(self, job: Job) -> None:
        """The batch is past validation: a request that may not go into another batch frees
        its encoded line now.

        One that may (``max_resubmits`` not spent, or ``on_expired="realtime"``) keeps it
        until its batch ends, so memory per request is what it was before the upload.
        (Re-reading the input file from the server instead would cost a download of the
        whole file per resubmission, and several providers delete it, or do not allow
        downloading it.) Every request keeps its line through validation: a batch the server
        fails over its enqueued-token quota ran nothing, whatever the request's count.
        """
        if self._config.on_expired == "realtime":
            return
        max_resubmits = self._config.max_resubmits
        for slot in job.slots.values():
            if slot.resubmits >= max_resubmits:
                slot.line = None
                slot.spilled = -1

    async def _cancel_overdue(self, job: Job) -> None:
        """The watchdog: the batch is still unfinished past ``batch_deadline_seconds``.

        Cancel it; what finished is delivered when it ends, and the requests it did not run
        (the server's ``batch_cancelled`` lines, or no line at all) go on: into a new batch,
        or to the real-time endpoint with ``on_expired="realtime"``.
        """
        record = job.record
        assert record.batch_id is not None
        status = job.batch.status if job.batch is not None else None
        detail = (
            f"not finished {self._config.batch_deadline_seconds:g}s after it was created "
            f"(status {status}): cancelling it"
        )
        logger.warning("batch %s (%d requests) %s", record.batch_id, job.size, detail)
        record.cancel_sent = True
        record.overdue = True
        self._event("batch_overdue", job, detail=detail)
        if self._journal is not None:
            await self._journal.save_job(record)
        try:
            job.batch = await self._wire.cancel_batch(record.batch_id)
        except APIError as exc:
            # (a batch that just ended refuses the cancel: the next poll shows how it ended)
            logger.warning("could not cancel overdue batch %s: %s", record.batch_id, exc)
            record.cancel_sent = False
            record.overdue = False
            job.overdue_at = anyio.current_time() + self._config.poll_interval_seconds
        record.next_poll_at = anyio.current_time() + self._config.poll_interval_seconds

    async def _cancel_abandoned(self, job: Job) -> None:
        record = job.record
        if not record.cancel_sent and record.batch_id is not None:
            record.cancel_sent = True
            try:
                await self._wire.cancel_batch(record.batch_id)
                self._event("batch_cancelled", job, detail="every caller left")
            except APIError as exc:
                logger.warning("could not cancel abandoned batch %s: %s", record.batch_id, exc)
        self._finish(job)

    # -- results --------------------------------------------------------------------------------

    def _reader(self, job: Job, offset_field: str, mark_field: str) -> tuple[LineSink, Checkpoint]:
        """What a download feeds: lines straight to their callers, or (with a journal) to the
        journal first, committed with the download offset (in lines, and where it may go on
        by bytes) before the callers are woken. Either way the record keeps that offset, so a
        later try of a download that failed goes on from there."""
        journal = self._journal
        record = job.record
        if journal is None:

            async def note(seen: int, final: bool, mark: ResumeMark | None) -> None:
                setattr(record, offset_field, seen)
                setattr(record, mark_field, mark)

            return self._router(job), note
        host = self._host
        pending: list[tuple[str, bytes]] = []
        unrun: list[tuple[str, bytes]] = []
        pending_bytes = 0

        def collect(line: bytes) -> None:
            nonlocal pending_bytes
            custom_id, answered = read_result_head(line)
            if custom_id is None:
                logger.warning("result line without custom_id in %s: %.200r", record.batch_id, line)
                return
            if not answered:
                slot = job.slots.get(custom_id)
                if slot is not None and self._take_for_retry(job, slot, line):
                    del job.slots[custom_id]  # it goes into a new batch: not an answer to keep
                    return
                if _retry_reason(line, cancelled_by_us=False) is not None:
                    # not an answer to keep: the request never ran (expired, cancelled) or
                    # failed transiently, so a later run may send it again; its caller here
                    # still gets the line's error
                    unrun.append((custom_id, line))
                    return
            pending.append((custom_id, line))
            pending_bytes += len(line)

        async def commit(seen: int, final: bool, mark: ResumeMark | None) -> None:
            nonlocal pending_bytes
            if not final and pending_bytes < _COMMIT_BYTES and len(pending) < _COMMIT_LINES:
                return
            setattr(record, offset_field, seen)
            setattr(record, mark_field, mark)
            batch = pending.copy()
            pending.clear()
            pending_bytes = 0
            with anyio.CancelScope(shield=True):  # committed whole, or not at all
                await journal.save_results(record, batch)
            slots = job.slots
            batch += unrun
            unrun.clear()
            for custom_id, line in batch:
                slot = slots.pop(custom_id, None)
                if slot is not None:
                    slot.outcome = line
                    fire(slot.signal)
                    host.settled(slot)

        return collect, commit

    def _router(self, job: Job) -> LineSink:
        slots = job.slots
        host = self._host

        def route(line: bytes) -> None:
            custom_id, answered = read_result_head(line)
            if custom_id is None:
                logger.warning(
                    "result line without custom_id in %s: %.200r", job.record.batch_id, line
                )
                return
            slot = slots.pop(custom_id, None)
            if slot is None:  # a caller that left, a duplicate line, or not ours
                return
            if not answered and self._take_for_retry(job, slot, line):
                return
            slot.outcome = line
            fire(slot.signal)
            host.settled(slot)

        return route

    async def _collect(self, job: Job, batch: Batch) -> None:
        if batch.status == "failed":
            self._fail_batch(job, batch)
            self._event("batch_failed", job)
            self._resubmit_taken(job)
            await self._delete_consumed_files(job, batch)
            self._finish(job)
            return
        try:
            await self._settle_ended(job, batch)
        except BaseException:
            # (a download failed half-way: what was taken is never left behind)
            self._resubmit_taken(job)
            raise
        await self._escalate_taken(job)
        await self._delete_consumed_files(job, batch)
        self._finish(job)

    async def _settle_ended(self, job: Job, batch: Batch) -> None:
        """Route the result lines of an ended batch, and settle the requests left without one:
        those that did not run go into a new batch while they may (``job.retry``)."""
        record = job.record
        status = batch.status
        batch_id = record.batch_id
        server_offset = record.partial
        # with a journal every line is kept, whoever waits for it (a later run may ask)
        wanted = bool(job.slots) or self._journal is not None
        if wanted:
            await self._read_files(
                job, batch.output_file_id, batch.error_file_id, server_offset=server_offset
            )
        make_error: Callable[[str], BaseException]
        if status == "expired":
            make_error = lambda cid: BatchExpiredError(  # noqa: E731
                "the batch's completion window elapsed before this request ran",
                code="batch_expired",
                custom_id=cid,
                batch_id=batch_id,
            )
            kind: EventKind = "batch_expired"
            self._take_unrun(job, _EXPIRED)
        elif status == "cancelled":
            make_error = lambda cid: BatchCancelledError(  # noqa: E731
                "the batch was cancelled before this request ran",
                code="batch_cancelled",
                custom_id=cid,
                batch_id=batch_id,
            )
            kind = "batch_cancelled"
            if not self._cancelled_by_us(job):
                self._take_unrun(job, _OVERDUE if job.record.overdue else _CANCELLED)
        else:
            make_error = lambda cid: MissingResultError(  # noqa: E731
                "the batch completed without any result line for this request",
                custom_id=cid,
                batch_id=batch_id,
            )
            kind = "batch_completed"
        self._settle_all(job, make_error)
        self._event(kind, job)

    # -- resubmission ---------------------------------------------------------------------------

    def _may_resubmit(self, slot: Slot, reason: str) -> bool:
        if slot.line is None and slot.spilled < 0:
            return False
        if reason in _ESCALATED and self._config.on_expired == "realtime":
            return True  # (escalated once, whatever its count: the real-time answer is final)
        if reason == _QUOTA:
            # nothing ran, so it is not the request's fault and does not count; but 0 says
            # never send anything again (see Engine.quota_rejected for why this ends)
            return self._config.max_resubmits > 0
        return slot.resubmits < self._config.max_resubmits

    def _cancelled_by_us(self, job: Job) -> bool:
        """Whether we cancelled the job's batch meaning to stop it (every caller left, client
        exit); a cancel by the watchdog means to go on, so it is not one."""
        return (job.record.cancel_sent and not job.record.overdue) or self._host.aborted

    def _take_for_retry(self, job: Job, slot: Slot, line: bytes) -> bool:
        """Whether ``line`` says ``slot``'s request did not run or failed transiently, and the
        request may go into a new batch; if so it is added to ``job.retry`` (the caller takes
        it off ``job.slots``). A permanent failure (400, 404 …) is an answer: False."""
        reason = _retry_reason(line, cancelled_by_us=self._cancelled_by_us(job))
        if reason is None:
            return False
        if reason == _CANCELLED and job.record.overdue:
            reason = _OVERDUE
        if not self._may_resubmit(slot, reason):
            return False
        job.retry.setdefault(reason, []).append(slot)
        return True

    def _take_unrun(self, job: Job, reason: str, keep: frozenset[str] = frozenset()) -> None:
        """Move the job's waiting requests (but ``keep``) that may go into a new batch to
        ``job.retry``: the server said they did not run."""
        slots = job.slots
        taken = [
            custom_id
            for custom_id, slot in slots.items()
            if custom_id not in keep and self._may_resubmit(slot, reason)
        ]
        if taken:
            job.retry.setdefault(reason, []).extend(slots.pop(cid) for cid in taken)

    def _resubmit_taken(self, job: Job) -> None:
        """Hand the requests in ``job.retry`` to the engine for a new batch."""
        retry = job.retry
        while retry:
            reason, slots = retry.popitem()
            self._unspill(job, slots)
            self._host.resubmit(
                slots, reason, batch_id=job.record.batch_id, counted=reason != _QUOTA
            )

    async def _escalate_taken(self, job: Job) -> None:
        """With ``on_expired="realtime"``: send the requests an expired (or overdue) batch
        did not run to the real-time endpoint now; the others in ``job.retry`` go into a new
        batch as usual."""
        slots: list[Slot] = []
        reasons: list[str] = []
        if self._config.on_expired == "realtime":
            for reason in _ESCALATED:
                taken = job.retry.pop(reason, None)
                if taken:
                    slots += taken
                    reasons.append(reason)
        self._resubmit_taken(job)
        if not slots:
            return
        escalation = Escalation(self._config, self._wire, self._journal)
        record = job.record
        reason = "; ".join(reasons)
        logger.warning(
            "escalating %d request(s) of batch %s to the real-time endpoint at full price (%s)",
            len(slots),
            record.batch_id,
            reason,
        )
        custom_ids = [slot.custom_id for slot in slots]
        self._event(
            "batch_escalated", job, detail=reason, requests=len(slots), custom_ids=custom_ids
        )
        if self._journal is not None:
            self._journal.note_resubmission(custom_ids, reason, record.batch_id, into=REALTIME)
        self._unspill(job, slots)
        try:
            await escalation.run(record, slots, self._host)
        finally:
            # (cancelled half-way, the client stopping: those not answered get their error)
            unanswered = [slot for slot in slots if slot.outcome is None]
            if unanswered:
                self._host.resubmit(unanswered, reason, batch_id=record.batch_id)

    @staticmethod
    def _unspill(job: Job, slots: list[Slot]) -> None:
        """Read back the lines of ``slots`` that were moved to disk at upload."""
        spill = job.spill
        for slot in slots:
            if slot.spilled >= 0:
                if spill is not None and slot.line is None:
                    try:
                        slot.line = spill.read(slot.spilled)
                    except OSError as exc:  # (left without a line: the engine fails it)
                        logger.warning("could not read back a spilled line: %s", exc)
                slot.spilled = -1

    def _fail_batch(self, job: Job, batch: Batch) -> None:
        raw_errors = batch.to_dict().get("errors")
        raw = raw_errors.get("data") if isinstance(raw_errors, dict) else None
        errors: list[dict[str, Any]] = (
            [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        )
        order = job.record.order
        by_custom_id: dict[str, dict[str, Any]] = {}
        for entry in errors:
            line = entry.get("line")
            if isinstance(line, int) and 1 <= line <= len(order):
                by_custom_id.setdefault(order[line - 1], entry)
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
                batch_id=job.record.batch_id,
            )

        quota_codes = self._wire.provider.quota_error_codes
        if by_custom_id:
            # Validation names the offending lines, and nothing ran: the others may go into
            # a new batch without them. (A failure naming no line leaves no way to tell.)
            self._take_unrun(job, _INVALID_OTHERS, keep=frozenset(by_custom_id))
        elif (
            errors
            and all(e.get("code") in quota_codes for e in errors)
            and self._host.quota_rejected(job)
        ):
            # Over the enqueued-token quota: nothing ran. The requests wait (in the engine's
            # ledger) until our running batches leave room, split if the job alone is over.
            self._take_unrun(job, _QUOTA)
        resubmitting = sum(map(len, job.retry.values()))
        logger.warning(
            "batch %s (%d requests) failed: %s%s",
            job.record.batch_id,
            job.size,
            summary,
            f" ({resubmitting} other requests go into a new batch)" if resubmitting else "",
        )
        self._settle_all(job, error_for)

    def _lose(self, job: Job, message: str) -> None:
        batch_id = job.record.batch_id
        logger.warning("batch %s: %s", batch_id, message)
        self._settle_all(job, lambda cid: BatchLostError(message, custom_id=cid, batch_id=batch_id))
        self._event("batch_failed", job, detail=message)
        self._finish(job)

    def _settle_all(self, job: Job, make_error: Callable[[str], BaseException]) -> None:
        settle_all(job, make_error, self._host)

    def _finish(self, job: Job) -> None:
        job.release_spill()
        job.record.phase = Phase.DONE
        job.batch = None
        self._host.finished(job)

    def _event(
        self,
        kind: EventKind,
        job: Job,
        *,
        detail: str | None = None,
        requests: int | None = None,
        custom_ids: list[str] | None = None,
    ) -> None:
        if not self._events.wanted:
            return
        batch = job.batch
        counts = batch.request_counts if batch is not None else None
        self._events.emit(
            BatchEvent(
                kind=kind,
                batch_id=job.record.batch_id,
                endpoint=job.record.endpoint,
                model=job.record.model,
                status=batch.status if batch is not None else None,
                requests=job.size if requests is None else requests,
                request_counts=_counts_dict(counts),
                elapsed=anyio.current_time() - job.flushed_at,
                detail=detail,
                custom_ids=tuple(custom_ids or ()),
            )
        )


# Why a request goes into a new batch (the ``detail`` of its ``batch_resubmitted`` event).
_EXPIRED = "batch expired before running them"
_CANCELLED = "batch cancelled upstream before running them"
_INVALID_OTHERS = "batch failed validation on other lines"
_QUOTA = "batch rejected over the enqueued-token quota (token_limit_exceeded)"
_OVERDUE = "batch cancelled by the watchdog (batch_deadline_seconds) before running them"
#: what ``on_expired="realtime"`` sends to the real-time endpoint instead of a new batch
_ESCALATED = (_EXPIRED, _OVERDUE)
#: result-line statuses that say "try again later": rate limited, server trouble
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503})
#: result-line error codes that say the request did not run, or timed out upstream
_TRANSIENT_CODES = {
    "batch_expired": _EXPIRED,
    "batch_cancelled": _CANCELLED,
    "request_timeout": "transient failure (request_timeout)",
}
#: cheap first look, so that the common line (a 200) is never parsed here
_TRANSIENT_HINT = re.compile(
    rb'"status_code"\s*:\s*(?:429|50[023])\b|"(?:batch_expired|batch_cancelled|request_timeout)"'
)


def _retry_reason(line: bytes, *, cancelled_by_us: bool) -> str | None:
    """Why the request of result ``line`` should run again in a new batch, or None: the line
    is an answer (a success, or a permanent failure)."""
    if _TRANSIENT_HINT.search(line) is None:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    response = data.get("response")
    if isinstance(response, dict):
        status = response.get("status_code")
        if status in _TRANSIENT_STATUSES:
            return f"transient failure (status {status})"
        body = response.get("body")
        body_error = body.get("error") if isinstance(body, dict) else None
        if code is None and isinstance(body_error, dict) and status != 200:
            code = body_error.get("code")
    if code == "batch_cancelled" and cancelled_by_us:
        return None
    return _TRANSIENT_CODES.get(code) if isinstance(code, str) else None


def settle_all(job: Job, make_error: Callable[[str], BaseException], host: JobHost) -> None:
    """Give every request still waiting on ``job`` its own error, and wake it."""
    slots = job.slots
    while slots:
        custom_id, slot = slots.popitem()
        slot.outcome = make_error(custom_id)
        slot.line = None
        fire(slot.signal)
        host.settled(slot)


def _counts(batch: Batch | None) -> tuple[object, ...]:
    counts = batch.request_counts if batch is not None else None
    if counts is None:
        # Together reports a ``progress`` percentage instead
        progress = batch.to_dict().get("progress") if batch is not None else None
        return (progress,) if isinstance(progress, int | float) else ()
    if isinstance(counts, dict):
        return (counts.get("total"), counts.get("completed"), counts.get("failed"))
    return (counts.total, counts.completed, counts.failed)


def _counts_dict(counts: object) -> dict[str, int] | None:
    if counts is None:
        return None
    if isinstance(counts, dict):
        return dict(counts)
    to_dict = getattr(counts, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else None
