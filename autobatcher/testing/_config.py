"""Configuration and statistics snapshots of the Batch API emulator."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["FLAVOURS", "EmulatorConfig", "EmulatorStats", "Quirks"]

Flavour = Literal["openai", "doubleword", "azure", "together", "groq", "generic"]
FLAVOURS: tuple[Flavour, ...] = ("openai", "doubleword", "azure", "together", "groq", "generic")
StatusCase = Literal["lower", "capitalized", "upper"]
TimestampFormat = Literal["seconds", "milliseconds", "iso"]
FileIdsAt = Literal["created", "finalizing", "terminal"]
AuthHeader = Literal["authorization", "api-key"]


@attrs.frozen(kw_only=True)
class Quirks:
    """How one flavour departs from OpenAI's Batch API (the resolved view of the quirk fields
    of :class:`EmulatorConfig`: each is the flavour's unless set there)."""

    #: limits of one input file
    max_lines: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    #: the API lives under this prefix (``/openai/v1/...``); calls without it are 404
    path_prefix: str = ""
    #: the header that carries the key: ``Authorization: Bearer KEY`` or ``api-key: KEY``
    auth_header: AuthHeader = "authorization"
    #: how statuses are spelled (``in_progress``, ``In_progress``, ``IN_PROGRESS``)
    status_case: StatusCase = "lower"
    #: how batch timestamps are written: Unix seconds, milliseconds, or ISO 8601 text
    timestamp_format: TimestampFormat = "seconds"
    #: whether batch objects carry ``request_counts``
    request_counts: bool = True
    #: whether batch objects carry ``progress`` (a percentage, as Together's)
    progress_percent: bool = False
    #: a create answers ``{"job": batch, "warning": null}`` instead of the batch
    wrap_created_batch: bool = False
    #: the purpose an input file must have been uploaded with
    upload_purpose: str = "batch"
    #: a new file is ``pending`` this long before ``processed``; a batch refuses it before
    file_processing_seconds: float = 0.0
    #: files (input and output) the server holds at once; an upload beyond is refused
    max_files: int | None = None
    #: the same cap for files uploaded / created with an expiry
    max_expiring_files: int | None = None
    #: a batch past its window expires (False: it keeps running, as on Azure)
    expire_batches: bool = True
    #: when a batch's output and error file ids appear (``created``: partial results)
    file_ids_at: FileIdsAt = "terminal"
    #: accepted completion windows; ``None``: any duration from 24 h to 7 d (Groq)
    windows: tuple[str, ...] | None = ("24h",)
    #: one model and one endpoint per batch
    single_model: bool = True
    #: a batch names its endpoint without the version (``/chat/completions``; Azure)
    endpoint_without_version: bool = False


_AZURE_FILE_CAP = 500  # Azure: files per resource without expiry
_FLAVOUR_QUIRKS: dict[str, Quirks] = {
    "openai": Quirks(),
    "doubleword": Quirks(windows=("24h", "1h"), file_ids_at="created", single_model=False),
    "azure": Quirks(
        max_lines=100_000,
        path_prefix="/openai",
        auth_header="api-key",
        status_case="capitalized",
        timestamp_format="iso",
        file_processing_seconds=0.05,
        max_files=_AZURE_FILE_CAP,
        max_expiring_files=10_000,
        expire_batches=False,
        endpoint_without_version=True,
    ),
    "together": Quirks(
        max_file_bytes=100 * 1000 * 1000,
        status_case="upper",
        timestamp_format="iso",
        request_counts=False,
        progress_percent=True,
        wrap_created_batch=True,
        upload_purpose="batch-api",
    ),
    "groq": Quirks(path_prefix="/openai", windows=None),
    "generic": Quirks(
        status_case="capitalized",
        timestamp_format="milliseconds",
        request_counts=False,
        file_ids_at="finalizing",
    ),
}
#: the quirk fields of EmulatorConfig (``None`` there: the flavour's)
QUIRK_FIELDS: tuple[str, ...] = tuple(field.name for field in attrs.fields(Quirks))


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
    if value not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, got {value!r}")


def _one_of(*options: object) -> Any:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and value not in options:
            raise ValueError(
                f"{attribute.name} must be one of {', '.join(map(repr, options))}, got {value!r}"
            )

    return check


def _prefix(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value and (not value.startswith("/") or value.endswith("/")):
        raise ValueError(f"{attribute.name} must look like '/openai', got {value!r}")


def _windows(value: Any) -> tuple[str, ...] | None:
    return _names(value)


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

    Downloads (``GET /v1/files/{id}/content``): ``content_ranges`` honours ``Range: bytes=``
    (a ``206`` with ``Content-Range``, ``Accept-Ranges: bytes``, ``If-Range`` against the
    ``ETag``); switched off, a Range is ignored and the whole file comes with a ``200``, as
    from a server without range support. ``content_drop_after_bytes`` cuts the next
    ``content_drops`` file downloads off after that many body bytes each (the connection
    drops mid-file); setting either starts the count again. ``EmulatorStats.content_bytes``
    counts the body bytes of every download sent.

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
    max_lines: int | None = attrs.field(default=None, validator=_positive)
    max_file_bytes: int | None = attrs.field(default=None, validator=_positive)
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
    content_ranges: bool = True
    content_drop_after_bytes: int | None = attrs.field(default=None, validator=_non_negative)
    content_drops: int = attrs.field(default=0, validator=_non_negative)
    shuffle_output: bool = True
    clock: Callable[[], float] | None = None
    embedding_dimensions: int = attrs.field(default=8, validator=_positive)
    known_models: tuple[str, ...] | None = attrs.field(
        default=None, converter=_names, validator=_non_empty_strings
    )
    # -- quirks: None takes the flavour's (see ``Quirks``); set one to switch it alone ------
    path_prefix: str | None = attrs.field(default=None, validator=_prefix)
    auth_header: AuthHeader | None = attrs.field(
        default=None, validator=_one_of("authorization", "api-key")
    )
    status_case: StatusCase | None = attrs.field(
        default=None, validator=_one_of("lower", "capitalized", "upper")
    )
    timestamp_format: TimestampFormat | None = attrs.field(
        default=None, validator=_one_of("seconds", "milliseconds", "iso")
    )
    request_counts: bool | None = None
    progress_percent: bool | None = None
    wrap_created_batch: bool | None = None
    upload_purpose: str | None = None
    file_processing_seconds: float | None = attrs.field(default=None, validator=_non_negative)
    max_files: int | None = attrs.field(default=None, validator=_positive)
    max_expiring_files: int | None = attrs.field(default=None, validator=_positive)
    expire_batches: bool | None = None
    file_ids_at: FileIdsAt | None = attrs.field(
        default=None, validator=_one_of("created", "finalizing", "terminal")
    )
    windows: tuple[str, ...] | None = attrs.field(
        default=None, converter=_windows, validator=_non_empty_strings
    )
    single_model: bool | None = None
    endpoint_without_version: bool | None = None

    @property
    def quirks(self) -> Quirks:
        """The flavour's quirks, with every quirk field set here overriding it."""
        base = _FLAVOUR_QUIRKS[self.flavour]
        changes = {
            name: getattr(self, name) for name in QUIRK_FIELDS if getattr(self, name) is not None
        }
        return attrs.evolve(base, **changes) if changes else base

    @property
    def api_root(self) -> str:
        """Where the API lives on the server: ``/v1``, or ``/openai/v1`` (Azure, Groq)."""
        return self.quirks.path_prefix + "/v1"


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
    #: body bytes of file downloads sent (partial ones included): what a client paid for
    content_bytes: int = 0

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
            "content_bytes": self.content_bytes,
            "total_executions": self.total_executions,
            "duplicate_executions": self.duplicate_executions,
        }
