"""What differs between "OpenAI-compatible" Batch APIs, as data.

Each provider is one frozen :class:`Provider` record: how to authenticate, the limits of one
input file, the upload purpose, which completion windows it takes, how to read its batch
objects (a wrapped create answer, status spelling, timestamps), and what to do with files
(wait until processed, delete when consumed). The engine reads these fields; it never asks
which provider it talks to.

The batch objects of every provider go through :func:`normalise_batch` (status case and
aliases, timestamps in seconds, milliseconds or ISO 8601 text, a wrapped object): being
tolerant costs nothing for a server that is already OpenAI-shaped.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

__all__ = [
    "PROVIDERS",
    "Provider",
    "ProviderName",
    "infer_provider",
    "normalise_batch",
    "window_seconds",
]

ProviderName = Literal["openai", "azure", "doubleword", "together", "groq", "generic"]

_MB = 1000 * 1000
_MIB = 1024 * 1024


@attrs.frozen(kw_only=True)
class Provider:
    """The capabilities of one Batch API (see the README's "Providers" section)."""

    name: ProviderName
    #: header that carries the key, and what goes before the key in it
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "
    #: limits of one input file, and our default byte cap under them: a margin for the
    #: multipart envelope and for servers that count megabytes in powers of ten
    max_lines: int = 50_000
    max_bytes: int = 200 * _MIB
    default_max_bytes: int = 180 * _MB
    max_embedding_inputs: int = 50_000
    upload_purpose: str = "batch"
    #: exact completion windows accepted; ``None``: any window in ``window_range``
    windows: tuple[str, ...] | None = ("24h",)
    #: (shortest, longest) window in seconds when ``windows`` is ``None``; ``None``: anything
    window_range: tuple[float, float] | None = None
    default_window: str = "24h"
    #: the server may expose result files of a running batch (read them as they grow)
    partial_results: bool = False
    #: the key under which a create answer wraps the batch (``{"job": {...}}``)
    create_wrapper: str | None = None
    #: an uploaded file must reach ``status: "processed"`` before a batch may use it
    wait_file_processed: bool = False
    #: delete the input file, and the output and error files once read (a per-resource cap)
    delete_consumed_files: bool = False
    #: upload with ``expires_after`` and create with ``output_expires_after`` (seconds)
    file_expiry_seconds: int | None = None
    #: a batch names its endpoint without ``/v1`` (``/chat/completions``) while the lines
    #: keep it (Azure)
    endpoint_without_version: bool = False
    #: the default ``poll_interval_seconds`` (the provider asks for polite polling)
    default_poll_interval_seconds: float = 5.0
    #: ``errors.data[].code`` of a batch failed because the enqueued-token quota was full
    #: (OpenAI and Azure: ``token_limit_exceeded``, naming no line): nothing of it ran
    quota_error_codes: frozenset[str] = frozenset({"token_limit_exceeded"})

    def option_defaults(self) -> dict[str, object]:
        """The client options this provider sets when they are left at ``None``."""
        return {
            "poll_interval_seconds": self.default_poll_interval_seconds,
            "completion_window": self.default_window,
            "max_batch_bytes": min(self.default_max_bytes, self.max_bytes),
            "max_batch_lines": self.max_lines,
            "max_embedding_inputs": self.max_embedding_inputs,
        }

    def batch_endpoint(self, endpoint: str) -> str:
        """The ``endpoint`` of a batch create for lines sent to ``endpoint`` (``/v1/...``)."""
        return endpoint.removeprefix("/v1") if self.endpoint_without_version else endpoint

    def check_window(self, window: str) -> None:
        """Raise ``ValueError`` naming the accepted windows if ``window`` is not one."""
        if self.windows is not None:
            if window not in self.windows:
                raise ValueError(
                    f"completion_window {window!r} is not accepted by provider {self.name!r}; "
                    f"use one of {', '.join(map(repr, self.windows))}"
                )
            return
        if self.window_range is None:
            return
        seconds = window_seconds(window)
        low, high = self.window_range
        if seconds is None or not low <= seconds <= high:
            raise ValueError(
                f"completion_window {window!r} is not accepted by provider {self.name!r}; "
                f"use a duration such as '24h' or '7d' between {_duration(low)} and "
                f"{_duration(high)}"
            )


PROVIDERS: Mapping[str, Provider] = {
    "openai": Provider(name="openai"),
    # Global-Batch deployments: api-key header, 100k lines, 500 files per resource (10,000
    # with expiry) so consumed files go, a file must be processed before use; polling more
    # than about once a minute is discouraged.
    "azure": Provider(
        name="azure",
        auth_header="api-key",
        auth_prefix="",
        max_lines=100_000,
        max_embedding_inputs=100_000,
        wait_file_processed=True,
        delete_consumed_files=True,
        file_expiry_seconds=14 * 24 * 3600,
        endpoint_without_version=True,
        default_poll_interval_seconds=60.0,
    ),
    "doubleword": Provider(name="doubleword", windows=("24h", "1h"), partial_results=True),
    "together": Provider(
        name="together",
        max_bytes=100 * _MB,
        default_max_bytes=90 * _MB,
        upload_purpose="batch-api",
        create_wrapper="job",
        default_poll_interval_seconds=30.0,
    ),
    "groq": Provider(name="groq", windows=None, window_range=(24 * 3600.0, 7 * 24 * 3600.0)),
    # Self-hosted gateways: accept any window, read result files whenever they appear.
    "generic": Provider(name="generic", windows=None, partial_results=True),
}

_HOSTS: tuple[tuple[str, ProviderName], ...] = (
    ("api.openai.com", "openai"),
    (".openai.azure.com", "azure"),
    (".cognitiveservices.azure.com", "azure"),
    (".services.ai.azure.com", "azure"),
    ("api.doubleword.ai", "doubleword"),
    ("api.together.xyz", "together"),
    ("api.together.ai", "together"),
    ("api.groq.com", "groq"),
)


def infer_provider(base_url: str) -> ProviderName:
    """The provider a base URL belongs to; ``"generic"`` for any other host."""
    host = (urlsplit(base_url).hostname or "").lower()
    for pattern, name in _HOSTS:
        if host.endswith(pattern) if pattern.startswith(".") else host == pattern:
            return name
    return "generic"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def window_seconds(window: str) -> float | None:
    """``"24h"`` → 86400.0; ``None`` for text that is not a duration."""
    match = _DURATION.match(window)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT[match.group(2)]


def _duration(seconds: float) -> str:
    if seconds % 86_400 == 0:
        return f"{seconds / 86_400:g}d"
    return f"{seconds / 3600:g}h"


# -- reading batch objects tolerantly ----------------------------------------------------------

_STATUS_ALIASES = {
    # spellings seen upstream, reduced to lower case without separators → OpenAI's
    "validating": "validating",
    "pending": "validating",
    "queued": "validating",
    "inprogress": "in_progress",
    "progress": "in_progress",
    "running": "in_progress",
    "finalizing": "finalizing",
    "finalising": "finalizing",
    "completed": "completed",
    "succeeded": "completed",
    "success": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelling": "cancelling",
    "canceling": "cancelling",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}
_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
#: a number of seconds this large is a date after the year 5000: it is milliseconds
_MILLISECONDS_FROM = 10**11


def normalise_status(status: object) -> object:
    if not isinstance(status, str):
        return status
    key = status.lower().replace("_", "").replace("-", "").replace(" ", "")
    return _STATUS_ALIASES.get(key, status.lower())


def normalise_timestamp(value: object) -> object:
    """Unix seconds from seconds, milliseconds or ISO 8601 text; anything else unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= _MILLISECONDS_FROM else value
        return int(seconds)
    if isinstance(value, str) and value:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            try:
                return normalise_timestamp(float(text))
            except ValueError:
                return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return int(moment.timestamp())
    return value


def normalise_batch(data: dict[str, Any], provider: Provider) -> dict[str, Any]:
    """A batch object in OpenAI's shape (a new dict only when something changed).

    Unwraps ``{"job": {...}}`` (Together's create answer), folds the status to OpenAI's
    lower-case names, and turns every ``*_at`` timestamp into Unix seconds.
    """
    wrapper = provider.create_wrapper
    if wrapper is not None and "id" not in data and isinstance(data.get(wrapper), dict):
        data = data[wrapper]
    changed: dict[str, Any] = {}
    status = data.get("status")
    folded = normalise_status(status)
    if folded != status:
        changed["status"] = folded
    for name in _TIMESTAMPS:
        value = data.get(name)
        if (value is not None and not isinstance(value, int)) or (
            isinstance(value, int) and abs(value) >= _MILLISECONDS_FROM
        ):
            changed[name] = normalise_timestamp(value)
    if not changed:
        return data
    return {**data, **changed}
