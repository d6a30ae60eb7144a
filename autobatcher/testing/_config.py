"""Configuration and statistics snapshots of the Batch API emulator."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["EmulatorConfig", "EmulatorStats"]

Flavour = Literal["openai", "doubleword"]


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _fraction(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _flavour(_inst: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ("openai", "doubleword"):
        raise ValueError(f"flavour must be 'openai' or 'doubleword', got {value!r}")


def _statuses(_inst: object, _attribute: attrs.Attribute[Any], value: tuple[int, ...]) -> None:
    if not value or any(not 400 <= s <= 599 for s in value):
        raise ValueError(f"error_statuses must be non-empty HTTP error statuses, got {value!r}")


def _names(value: Any) -> tuple[str, ...] | None:
    """``None``, one string, or an iterable of strings, as a tuple (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _non_empty_strings(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...] | None
) -> None:
    if value is not None and not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{attribute.name} must hold non-empty strings, got {value!r}")


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """How the emulator behaves. Every field has a default; change them at run time with
    :meth:`Emulator.configure`.

    Speeds: a batch stays ``validating`` for ``validation_seconds``, then processes
    ``lines_per_second`` lines a second (``None``: all at once), then stays ``finalizing`` for
    ``finalizing_seconds``. A cancelled batch stays ``cancelling`` for ``cancelling_seconds``.
    ``expire_after_seconds`` replaces the completion window (24 h, or 1 h) as the time a
    batch has before it expires.

    Time: every duration is measured on ``clock``; ``None`` (the default) is the running
    event loop's clock (``anyio.current_time()``), so under trio's
    ``MockClock(autojump_threshold=0)`` a test runs hours of batch lifecycle in
    milliseconds. Timestamps in API objects (``created_at``, …) are Unix seconds that move
    with that clock from the wall time at which the emulator was created.

    Faults (on ``/v1`` API calls, restricted to the path prefixes in ``fault_paths`` when
    given): ``drop_rate`` drops the connection (after the request took effect when
    ``drop_after_processing``), ``rate_limit_rate`` answers 429 with ``retry-after`` headers,
    ``error_rate`` answers a random status from ``error_statuses`` (with the same headers
    when ``retry_after_on_errors``, so SDK backoff stays short in tests). One draw decides,
    so the rates add up. ``fault_seed`` makes
    the draws (and the output shuffle) reproducible.

    Models: any model name is accepted unless ``known_models`` is given; then a request naming
    another model fails as OpenAI fails it, with a 404 ``model_not_found`` error (a batch line
    gets it in its ``response``; a real-time call as its HTTP answer). A moderation request
    that names no model is not checked.

    Fake answers: ``embedding_dimensions`` is the length of an embedding when the request has
    no ``dimensions``; a request's own ``dimensions`` (any positive integer) makes a vector,
    and so a result line, as large as wanted.
    """

    api_key: str | None = None
    flavour: Flavour = attrs.field(default="openai", validator=_flavour)
    max_lines: int = attrs.field(default=50_000, validator=_positive)
    max_file_bytes: int = attrs.field(default=200 * 1024 * 1024, validator=_positive)
    validation_seconds: float = attrs.field(default=0.0, validator=_non_negative)
    lines_per_second: float | None = attrs.field(default=None, validator=_positive)
    finalizing_seconds: float = attrs.field(default=0.0, validator=_non_negative)
    cancelling_seconds: float = attrs.field(default=0.0, validator=_non_negative)
    expire_after_seconds: float | None = attrs.field(default=None, validator=_non_negative)
    enqueued_token_limit: int | None = attrs.field(default=None, validator=_non_negative)
    error_rate: float = attrs.field(default=0.0, validator=_fraction)
    error_statuses: tuple[int, ...] = attrs.field(
        default=(500, 502, 503), converter=tuple, validator=_statuses
    )
    rate_limit_rate: float = attrs.field(default=0.0, validator=_fraction)
    retry_after_seconds: float = attrs.field(default=0.05, validator=_non_negative)
    retry_after_on_errors: bool = True
    drop_rate: float = attrs.field(default=0.0, validator=_fraction)
    drop_after_processing: bool = True
    fault_seed: int | None = None
    fault_paths: tuple[str, ...] | None = attrs.field(default=None, converter=_names)
    shuffle_output: bool = True
    clock: Callable[[], float] | None = None
    embedding_dimensions: int = attrs.field(default=8, validator=_positive)
    known_models: tuple[str, ...] | None = attrs.field(
        default=None, converter=_names, validator=_non_empty_strings
    )


@attrs.frozen(kw_only=True)
class EmulatorStats:
    """A snapshot of what the emulator has seen (see :meth:`Emulator.stats`).

    ``executions`` maps the canonical JSON of each request body the fake model ran (batch
    lines and real-time calls) to how many times it ran: a body counted twice was paid twice.
    """

    uploads: int = 0
    upload_bytes: int = 0
    batches_created: int = 0
    batches_by_status: Mapping[str, int] = attrs.field(factory=dict)
    realtime_calls: int = 0
    api_calls: int = 0
    api_calls_by_route: Mapping[str, int] = attrs.field(factory=dict)
    faults_injected: int = 0
    faults_by_kind: Mapping[str, int] = attrs.field(factory=dict)
    executions: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def total_executions(self) -> int:
        """How many request bodies the fake model ran, counting repeats."""
        return sum(self.executions.values())

    @property
    def duplicate_executions(self) -> int:
        """How many runs repeated a body that had already run (sum of count - 1)."""
        return sum(n - 1 for n in self.executions.values() if n > 1)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (what ``GET /_emulator/stats`` returns)."""
        return {
            "uploads": self.uploads,
            "upload_bytes": self.upload_bytes,
            "batches_created": self.batches_created,
            "batches_by_status": dict(self.batches_by_status),
            "realtime_calls": self.realtime_calls,
            "api_calls": self.api_calls,
            "api_calls_by_route": dict(self.api_calls_by_route),
            "faults_injected": self.faults_injected,
            "faults_by_kind": dict(self.faults_by_kind),
            "executions": dict(self.executions),
            "total_executions": self.total_executions,
            "duplicate_executions": self.duplicate_executions,
        }
