"""Structured lifecycle events handed to the user's ``event_hook``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Literal

import attrs

__all__ = ["BatchEvent", "EventKind"]

logger = logging.getLogger("autobatcher")

EventKind = Literal[
    "batch_submitted",
    "batch_progress",
    "batch_completed",
    "batch_failed",
    "batch_expired",
    "batch_cancelled",
    "retry",
    "client_closing",
]


@attrs.frozen(kw_only=True)
class BatchEvent:
    """One thing that happened to a batch (or to the client).

    ``elapsed`` is seconds since the batch was flushed (or since the call began, for ``retry``).
    ``request_counts`` mirrors the Batch object's ``{total, completed, failed}``.
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
