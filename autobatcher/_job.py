"""One upstream batch: its persistable record, its runtime state, and the requests it carries.

A :class:`Job` starts as a lane (collecting requests), is flushed, and then follows one
upstream batch: upload → create → poll → collect → settle (see :mod:`autobatcher._runner`).
What a journal must keep to resume it in another process is the :class:`JobRecord` (ids,
phase, line order, offsets, unsure flags, the time of the next poll); everything else on the
:class:`Job` (waiting requests, cancel scopes, the last Batch snapshot) lives and dies with the
process.
"""

from __future__ import annotations

import enum
import os
import tempfile
from array import array
from typing import ClassVar

import anyio
import attrs

from ._signals import Signal, new_signal
from .types import Batch

__all__ = ["GONE", "Job", "JobRecord", "LineSpill", "Phase", "Slot"]


class Phase(enum.IntEnum):
    OPEN = 0  # a lane, collecting requests
    QUEUED = 1  # flushed, not uploaded
    UPLOADING = 2  # upload in flight: the lines are fixed
    UPLOADED = 3  # file_id known, batch not created
    SUBMITTED = 4  # batch_id known, polling
    DONE = 5


@attrs.define(kw_only=True)
class JobRecord:
    """Everything needed to pick a job up where it stands, in this process or the next."""

    key: str  # our idempotency key: the input file's name and the batch's metadata value
    endpoint: str
    model: str
    phase: Phase = Phase.OPEN
    order: list[str] = attrs.Factory(list)  # custom_ids in file order, fixed at upload
    file_id: str | None = None
    batch_id: str | None = None
    #: a call with a side effect may have taken effect: look it up before sending it again
    upload_unsure: bool = False
    create_unsure: bool = False
    created_wall: float = 0.0  # epoch seconds of the first create attempt (bounds the look-up)
    output_seen: int = 0  # result lines already read (partial results, resumed downloads)
    error_seen: int = 0
    partial: bool = False  # the server offered results while the batch ran
    cancel_sent: bool = False
    next_poll_at: float | None = None  # event-loop clock; a hand-over never moves it


class Slot:
    """One request waiting for its answer: a raw result line, or an exception.

    Created in the caller's task, it travels through the intake stream into a lane (``job``
    is set then) and is fired exactly once with its outcome. A request the server says did
    not run (its batch expired, failed validation over another line, or answered it with a
    transient failure) may travel into another lane instead: ``resubmits`` counts how often.
    Its encoded ``line`` is kept until then (see ``JobRunner._upload``): in memory, or, for
    a kind of slot that says so (``spills_line``), in its job's :class:`LineSpill` on disk
    from the upload on, at position ``spilled``.
    """

    __slots__ = (
        "custom_id",
        "endpoint",
        "inputs",
        "job",
        "line",
        "model",
        "outcome",
        "resubmits",
        "signal",
        "spilled",
    )

    #: whether this kind of request keeps its line on disk once uploaded (bulk requests:
    #: memory per waiting request must not grow with the prompt)
    spills_line: ClassVar[bool] = False

    def __init__(self, custom_id: str, endpoint: str, model: str, line: bytes, inputs: int) -> None:
        self.signal: Signal = new_signal()
        self.custom_id = custom_id
        self.endpoint = endpoint
        self.model = model
        self.line: bytes | None = line
        self.inputs = inputs
        self.job: Job | None = None
        self.outcome: bytes | BaseException | None = None
        self.resubmits = 0
        self.spilled = -1

    def done(self) -> bool:
        return self.outcome is not None

    @property
    def batch_id(self) -> str | None:
        return self.job.record.batch_id if self.job is not None else None


class LineSpill:
    """Encoded lines of an uploaded job, kept in an anonymous temporary file (deleted when
    closed, or when the process ends) so that they can be sent again without being held in
    memory. Written once, in a worker thread; a line is read back only to be resubmitted."""

    __slots__ = ("_file", "_offsets")

    def __init__(self, lines: list[bytes]) -> None:
        offsets = array("Q", [0])
        total = 0
        for line in lines:
            total += len(line)
            offsets.append(total)
        file = tempfile.TemporaryFile(prefix="autobatcher-lines-")  # noqa: SIM115 (kept open)
        try:
            file.writelines(lines)
            file.flush()
        except BaseException:
            file.close()
            raise
        self._file = file
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def read(self, index: int) -> bytes:
        """Line ``index`` (a small positioned read from the page cache)."""
        start = self._offsets[index]
        return os.pread(self._file.fileno(), self._offsets[index + 1] - start, start)

    def close(self) -> None:
        self._file.close()


class _Gone(Exception):
    """The outcome of a slot whose caller left."""


GONE = _Gone()


@attrs.define(eq=False, kw_only=True)
class Job:
    """A job's runtime side: the requests still waiting, and what only this process knows."""

    record: JobRecord
    deadline: float  # when the lane's window closes (event-loop clock)
    slots: dict[str, Slot] = attrs.Factory(dict)  # still-waiting requests, in line order
    nbytes: int = 0
    inputs: int = 0
    queued: int = 0  # requests of ours not uploaded yet (they count against the intake bound)
    flushed_at: float = 0.0
    batch: Batch | None = None  # the last snapshot the server sent
    abandoned: bool = False  # every caller left after upload
    resumed: bool = False  # picked up from the journal of an earlier run
    idle_scope: anyio.CancelScope | None = None
    #: requests taken off this job to go into a new batch, by reason (see JobRunner)
    retry: dict[str, list[Slot]] = attrs.Factory(dict)
    #: the lines of requests that may go into a new batch, on disk (see Slot)
    spill: LineSpill | None = None

    @property
    def phase(self) -> Phase:
        return self.record.phase

    @property
    def size(self) -> int:
        record = self.record
        return len(record.order) if record.phase >= Phase.UPLOADED else len(self.slots)

    def release_spill(self) -> None:
        if self.spill is not None:
            self.spill.close()
            self.spill = None

    def interrupt(self) -> None:
        """Cut short the job's sleep (a poll interval, a retry delay), if it is in one."""
        if self.idle_scope is not None:
            self.idle_scope.cancel()
