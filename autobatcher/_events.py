"""Structured lifecycle events handed to the user's ``event_hook``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Literal

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["BatchEvent", "EventHub", "EventKind"]

logger = logging.getLogger("autobatcher")

EventKind = Literal[
    "batch_submitted",
    "batch_progress",
    "batch_finalizing",
    "batch_completed",
    "batch_failed",
    "batch_expired",
    "batch_cancelled",
    "batch_resubmitted",
    "batch_overdue",
    "batch_escalated",
    "retry",
    "client_closing",
]


@attrs.frozen(kw_only=True)
class BatchEvent:
    """One thing that happened to a batch (or to the client).

    ``elapsed`` is seconds since the batch was flushed (or since the call began, for ``retry``).
    ``request_counts`` mirrors the Batch object's ``{total, completed, failed}``.

    When a batch goes wrong: ``batch_resubmitted`` (``requests`` of batch ``batch_id`` go
    into a new batch; ``detail`` says why, ``custom_ids`` which; the ``batch_submitted``
    of the batch they go into names them in its ``custom_ids`` and ``detail``),
    ``batch_overdue`` (the watchdog cancels a batch unfinished after
    ``batch_deadline_seconds``), ``batch_escalated`` (``requests`` go to the real-time
    endpoint at full price, ``on_expired="realtime"``).
    """

    kind: EventKind
    batch_id: str | None = None
    endpoint: str | None = None
    model: str | None = None
    status: str | None = None
    requests: int = 0
    request_counts: Mapping[str, int] | None = None
    elapsed: float = 0.0
    detail: str | None = None
    #: ``batch_resubmitted`` / ``batch_escalated``: the requests that went on;
    #: ``batch_submitted``: the resubmitted requests the new batch carries
    custom_ids: tuple[str, ...] = ()


def emit(hook: Callable[[BatchEvent], object] | None, event: BatchEvent) -> None:
    """Hand ``event`` to the hook; a hook that raises is logged and ignored."""
    if event.kind == "retry":
        logger.info("retry: %s", event.detail)
    else:
        logger.debug("%s %s %s", event.kind, event.batch_id, event.status)
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.exception("event_hook raised on %s; ignored", event.kind)


class EventHub:
    """Where events go: the synchronous ``event_hook`` and every ``client.events()`` stream.

    Subscribers get events on bounded memory object streams. The engine never waits for a
    slow reader: when a subscriber's buffer is full the event is dropped for that subscriber
    (and counted, and logged once), so watching a client can never stall its batches.
    """

    def __init__(self, hook: Callable[[BatchEvent], object] | None) -> None:
        self._hook = hook
        self._subscribers: list[MemoryObjectSendStream[BatchEvent]] = []
        self._closed = False
        self.dropped = 0

    @property
    def wanted(self) -> bool:
        """Whether anyone listens (building an event is skipped when nobody does)."""
        return (
            self._hook is not None or bool(self._subscribers) or logger.isEnabledFor(logging.DEBUG)
        )

    def emit(self, event: BatchEvent) -> None:
        emit(self._hook, event)
        for stream in self._subscribers:
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                if not self.dropped:
                    logger.warning(
                        "an events() reader is not keeping up; events are dropped for it"
                    )
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        if self._subscribers:
            self._subscribers = [s for s in self._subscribers if not _gone(s)]

    def subscribe(self, max_buffer: int) -> MemoryObjectReceiveStream[BatchEvent]:
        send, receive = anyio.create_memory_object_stream[BatchEvent](max_buffer)
        if self._closed:
            send.close()
        else:
            self._subscribers.append(send)
        return receive

    def close(self) -> None:
        """End every subscriber's ``async for`` (the client is closed)."""
        self._closed = True
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()


def _gone(stream: MemoryObjectSendStream[BatchEvent]) -> bool:
    return stream.statistics().open_receive_streams == 0
