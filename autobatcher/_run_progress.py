"""How far an ``autobatcher run`` got: the counts, and the two ways of showing them.

On a terminal, a live display drawn by `rich <https://rich.readthedocs.io>`_ (the ``cli``
extra); otherwise (output redirected, or rich not installed) one plain line every
``--log-interval`` seconds. Both go to stderr, so stdout carries only the summary.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any, TextIO

import attrs

from ._events import BatchEvent

__all__ = ["Progress", "format_count", "format_duration", "render_line"]

#: statuses a batch is in while its requests wait upstream, in the order they come
_RUNNING_STATUSES = ("validating", "in_progress", "finalizing", "cancelling", "downloading")
_TERMINAL_KINDS = frozenset({"batch_completed", "batch_failed", "batch_expired", "batch_cancelled"})
#: a batch in one of these is over upstream, but its results are not all in yet
_DONE_UPSTREAM = frozenset({"completed", "failed", "expired", "cancelled"})
#: seconds of history behind the rate (and so the ETA)
_RATE_WINDOW = 60.0


@attrs.define
class _Batch:
    status: str
    requests: int


@attrs.define
class Progress:
    """The counts of one run (mutated by the run's tasks, read by the display)."""

    #: lines in the input file (from its fingerprint pass)
    total_lines: int = 0
    #: requests the output already held when this run started
    done_before: int = 0
    #: input lines read so far this run (valid, rejected and already done alike)
    read: int = 0
    rejected: int = 0
    #: requests handed to client.map()
    submitted: int = 0
    #: of those, not yet uploaded / being uploaded, when client.map() tells
    queued: int | None = None
    uploading: int | None = None
    #: answers this run (written to the output), and of those, failures
    done: int = 0
    failed: int = 0
    #: requests that did not run (not written; a re-run sends them again)
    not_run: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_finished: bool = False
    started: float = attrs.field(factory=time.monotonic)
    batches: dict[str, _Batch] = attrs.field(factory=dict)
    batch_ids: set[str] = attrs.field(factory=set)
    _samples: deque[tuple[float, int]] = attrs.field(factory=deque)

    def on_event(self, event: BatchEvent) -> None:
        batch_id = event.batch_id
        if batch_id is None:
            return
        self.batch_ids.add(batch_id)
        if event.kind in _TERMINAL_KINDS:
            self.batches.pop(batch_id, None)
            return
        if event.kind == "batch_resubmitted":
            return
        status = event.status or "validating"
        if status in _DONE_UPSTREAM:  # ended upstream; its results are being downloaded
            status = "downloading"
        batch = self.batches.get(batch_id)
        if batch is None:
            self.batches[batch_id] = _Batch(status, event.requests)
        else:
            batch.status = status

    def answered_in(self, batch_id: str | None) -> None:
        """One request of this batch has its answer: it is no longer waiting in it."""
        batch = self.batches.get(batch_id) if batch_id is not None else None
        if batch is not None and batch.requests > 0:
            batch.requests -= 1

    def adopt_batch(self, batch_id: str, status: str, requests: int) -> None:
        """A running batch no event announced (one an earlier run left upstream)."""
        if batch_id not in self.batches and status not in _DONE_UPSTREAM:
            self.batch_ids.add(batch_id)
            self.batches[batch_id] = _Batch(status, requests)

    def in_batches(self) -> dict[str, int]:
        """Requests in batches that run upstream, by the batch's status."""
        counts: dict[str, int] = {}
        for batch in self.batches.values():
            counts[batch.status] = counts.get(batch.status, 0) + batch.requests
        return counts

    def rate(self, now: float | None = None) -> float:
        """Answers per second over the last minute (or since the start)."""
        now = time.monotonic() if now is None else now
        finished = self.done + self.not_run
        samples = self._samples
        if not samples:
            samples.append((self.started, 0))
        samples.append((now, finished))
        while len(samples) > 2 and now - samples[1][0] >= _RATE_WINDOW:
            samples.popleft()
        first_time, first_count = samples[0]
        if now - first_time <= 0:
            return 0.0
        return (finished - first_count) / (now - first_time)

    def remaining(self) -> int:
        """Requests still to answer, as far as the input's line count tells."""
        settled = self.done_before + self.done + self.not_run + self.rejected
        if self.input_finished:
            return max(0, self.submitted - self.done - self.not_run)
        return max(0, self.total_lines - settled)

    def snapshot(self) -> dict[str, Any]:
        """The counts as JSON (for the state file, which ``--status`` reads)."""
        return {
            "total_lines": self.total_lines,
            "done_before": self.done_before,
            "read": self.read,
            "rejected": self.rejected,
            "submitted": self.submitted,
            "queued": self.queued,
            "uploading": self.uploading,
            "in_batches": self.in_batches(),
            "done": self.done,
            "failed": self.failed,
            "not_run": self.not_run,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "batches": len(self.batch_ids),
        }


def format_count(value: int) -> str:
    return f"{value:,}"


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _waiting(progress: Progress, in_batches: Mapping[str, int]) -> tuple[str, str]:
    """(queued, uploading) as text: what client.map() says, or both together."""
    if progress.queued is not None and progress.uploading is not None:
        return format_count(progress.queued), format_count(progress.uploading)
    unsent = progress.submitted - progress.done - progress.not_run - sum(in_batches.values())
    return format_count(max(0, unsent)), "-"


def _eta(progress: Progress, rate: float) -> str:
    remaining = progress.remaining()
    if remaining == 0:
        return "0s"
    if rate <= 0:
        return "?"
    return format_duration(remaining / rate)


def _batch_text(in_batches: Mapping[str, int]) -> str:
    """The statuses of running batches but ``finalizing`` (shown on its own)."""
    shown = [s for s in _RUNNING_STATUSES if in_batches.get(s) and s != "finalizing"]
    shown += sorted(s for s in in_batches if s not in _RUNNING_STATUSES)
    return ", ".join(f"{status} {format_count(in_batches[status])}" for status in shown)


def render_line(progress: Progress, now: float | None = None) -> str:
    """One plain progress line (for logs)."""
    now = time.monotonic() if now is None else now
    in_batches = progress.in_batches()
    queued, uploading = _waiting(progress, in_batches)
    rate = progress.rate(now)
    finalizing = in_batches.get("finalizing", 0)
    running = sum(in_batches.values()) - finalizing
    tokens = progress.prompt_tokens + progress.completion_tokens
    parts = [
        f"read {format_count(progress.read)}/{format_count(progress.total_lines)}",
        f"queued {queued}",
        f"uploading {uploading}",
        f"in batches {format_count(running)}"
        + (f" ({_batch_text(in_batches)})" if running else ""),
        f"finalizing {format_count(finalizing)}",
        f"done {format_count(progress.done_before + progress.done)}"
        + (f" (failed {format_count(progress.failed)})" if progress.failed else ""),
    ]
    if progress.not_run:
        parts.append(f"not run {format_count(progress.not_run)}")
    if progress.rejected:
        parts.append(f"rejected {format_count(progress.rejected)}")
    parts += [
        f"{rate:,.0f}/s",
        f"ETA {_eta(progress, rate)}",
        f"tokens {format_count(tokens)}",
        f"elapsed {format_duration(now - progress.started)}",
    ]
    return " | ".join(parts)


class LiveDisplay:
    """The rich live display (stderr): a table of the counts and a bar of what is done."""

    def __init__(self, progress: Progress, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._progress = progress
        self._console = Console(file=stream)
        self._live = Live(console=self._console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        self.refresh()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.refresh()
        self._live.__exit__(None, None, None)

    def refresh(self) -> None:
        self._live.update(self._render(), refresh=True)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        progress = self._progress
        now = time.monotonic()
        in_batches = progress.in_batches()
        queued, uploading = _waiting(progress, in_batches)
        rate = progress.rate(now)
        finalizing = in_batches.get("finalizing", 0)
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column()
        total = progress.total_lines
        done_all = progress.done_before + progress.done
        table.add_row("read", format_count(progress.read), f"of {format_count(total)} lines")
        table.add_row("queued", queued, "")
        table.add_row("uploading", uploading, "")
        for status in ("validating", "in_progress", "cancelling", "downloading"):
            if in_batches.get(status):
                table.add_row(f"in batches: {status}", format_count(in_batches[status]), "")
        if not any(
            in_batches.get(s) for s in ("validating", "in_progress", "cancelling", "downloading")
        ):
            table.add_row("in batches", "0", "")
        table.add_row("finalizing", format_count(finalizing), "")
        earlier = f"({format_count(progress.done_before)} before this run)"
        table.add_row("done", format_count(done_all), earlier if progress.done_before else "")
        table.add_row("failed", format_count(progress.failed), "")
        if progress.not_run:
            table.add_row("not run", format_count(progress.not_run), "a re-run sends them again")
        if progress.rejected:
            table.add_row("rejected lines", format_count(progress.rejected), "see the errors file")
        table.add_row("rate", f"{rate:,.0f}/s", f"ETA {_eta(progress, rate)}")
        table.add_row(
            "tokens",
            format_count(progress.prompt_tokens + progress.completion_tokens),
            f"{format_count(progress.prompt_tokens)} in, "
            f"{format_count(progress.completion_tokens)} out",
        )
        table.add_row("batches", format_count(len(progress.batch_ids)), "")
        table.add_row("elapsed", format_duration(now - progress.started), "")
        goal = max(1, total - progress.rejected)
        bar = ProgressBar(total=goal, completed=min(goal, done_all + progress.not_run), width=50)
        return Group(bar, table)
