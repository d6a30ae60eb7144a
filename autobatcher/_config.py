"""One frozen configuration record, validated at construction."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

import attrs
import httpx

from ._providers import PROVIDERS, Provider, ProviderName, infer_provider

if TYPE_CHECKING:
    from ._events import BatchEvent

__all__ = ["DEFAULT_BASE_URL", "BatcherConfig", "OnExpired", "estimate_tokens"]

OnExpired = Literal["resubmit", "realtime"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _count(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _optional_positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _int_at_most(limit: int) -> Callable[[object, attrs.Attribute[Any], int], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an int, got {type(value).__name__}")
        if not 1 <= value <= limit:
            raise ValueError(f"{attribute.name} must be between 1 and {limit}, got {value}")

    return check


def _optional_seconds(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{attribute.name} must be a number of seconds or None, got {type(value).__name__}"
        )
    _positive(instance, attribute, value)


def _optional_count(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


def _on_expired(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("resubmit", "realtime"):
        raise ValueError(f"on_expired must be 'resubmit' or 'realtime', got {value!r}")


def _optional_int(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, got {type(value).__name__}")


def _check_at_most(name: str, value: int, limit: int, provider: str) -> None:
    if not 1 <= value <= limit:
        raise ValueError(
            f"{name} must be between 1 and {limit} (provider {provider!r}), got {value}"
        )


# Converters that keep ``None`` for ``__attrs_post_init__`` to fill in with the provider's
# default; typed so that the constructor takes ``X | None`` while the field reads as ``X``.


def _provider_later(value: ProviderName | None) -> ProviderName:
    return cast("ProviderName", value)


def _float_later(value: float | None) -> float:
    return cast(float, value)


def _int_later(value: int | None) -> int:
    return cast(int, value)


def _str_later(value: str | None) -> str:
    return cast(str, value)


def _provider(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value not in PROVIDERS:
        raise ValueError(
            f"provider must be one of {', '.join(map(repr, PROVIDERS))} (or None to infer it "
            f"from base_url), got {value!r}"
        )


def _metadata(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise TypeError(f"{attribute.name} must be a mapping of str to str")
    # OpenAI: at most 16 pairs, keys <= 64 chars, values <= 512 chars. We use one pair ourselves.
    if len(value) > 15:
        raise ValueError(f"{attribute.name} may hold at most 15 pairs (one is reserved)")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"{attribute.name} must map str to str, got {key!r}: {item!r}")
        if len(key) > 64 or len(item) > 512:
            raise ValueError(f"{attribute.name}: keys <= 64 chars and values <= 512 chars")
        if key.startswith("autobatcher"):
            raise ValueError(f"{attribute.name}: keys starting with 'autobatcher' are reserved")


def _query(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise TypeError(f"{attribute.name} must be a mapping with str keys, got {value!r}")


def _timeout(value: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    if value is None:
        return httpx.Timeout(600.0, connect=5.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"timeout must be a positive number or httpx.Timeout, got {value!r}")
    return httpx.Timeout(float(value), connect=min(5.0, float(value)))


def _base_url(value: str | httpx.URL | None) -> str:
    url = str(value or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def estimate_tokens(nbytes: int) -> int:
    """The enqueued-token estimate of ``nbytes`` of JSONL request lines: bytes / 4, rounded up.

    Providers count the *input* tokens of a batch against its enqueued-token quota (OpenAI's
    "batch queue limit", Azure's per-deployment quota). A token is about four bytes of
    English text, and the whole encoded line (its JSON keys, custom_id and url included) is
    counted, so the estimate errs high for prompts and needs no tokenizer.
    """
    return (nbytes + 3) // 4


@attrs.frozen(kw_only=True)
class BatcherConfig:
    """Everything a batcher needs to know; built once, never changed.

    ``api_key`` and ``base_url`` fall back to ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.
    """

    api_key: str | None = attrs.field(default=None, repr=False)
    base_url: str = attrs.field(default=None, converter=_base_url)
    organization: str | None = None
    project: str | None = None
    default_headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    #: Query parameters added to every Files/Batches call (as the SDK's ``default_query``).
    default_query: Mapping[str, object] = attrs.field(factory=dict, validator=_query)
    timeout: httpx.Timeout = attrs.field(default=None, converter=_timeout)
    max_retries: int = attrs.field(default=2, validator=_non_negative)

    #: which Batch API dialect (``None``: inferred from ``base_url``; see ``_providers.py``).
    #: Options below left at ``None`` take this provider's defaults and limits.
    provider: ProviderName = attrs.field(
        default=None, converter=_provider_later, validator=_provider
    )
    batch_size: int = attrs.field(
        default=100, validator=_int_at_most(max(p.max_lines for p in PROVIDERS.values()))
    )
    batch_window_seconds: float = attrs.field(default=1.0, validator=_non_negative)
    poll_interval_seconds: float = attrs.field(
        default=None, converter=_float_later, validator=_optional_positive
    )
    completion_window: str = attrs.field(default=None, converter=_str_later)
    batch_metadata: Mapping[str, str] | None = attrs.field(default=None, validator=_metadata)
    max_batch_bytes: int = attrs.field(default=None, converter=_int_later, validator=_optional_int)
    max_batch_lines: int = attrs.field(default=None, converter=_int_later, validator=_optional_int)
    max_embedding_inputs: int = attrs.field(
        default=None, converter=_int_later, validator=_optional_int
    )
    max_batches_in_flight: int | None = attrs.field(default=None, validator=_optional_positive)
    max_queued_requests: int = attrs.field(default=100_000, validator=_positive)
    job_error_budget_seconds: float = attrs.field(default=600.0, validator=_positive)
    cancel_abandoned_batches: bool = True
    #: None: cancel without a journal, keep them running (for the next run) with one
    cancel_batches_on_exit: bool | None = None
    shutdown_timeout_seconds: float = attrs.field(default=10.0, validator=_positive)
    fetch_partial_results: bool = True
    #: how many times one request may go into a new batch after its batch expired, failed
    #: validation because of another line, or answered it with a transient failure
    max_resubmits: int = attrs.field(default=3, validator=_count)
    #: a known enqueued-token quota (per model): batches are sized and started so that the
    #: estimated input tokens of our unfinished batches of one model stay within it. The
    #: estimate is cheap and errs high: the bytes of a request's encoded JSONL line / 4.
    max_enqueued_tokens: int | None = attrs.field(default=None, validator=_optional_count)
    #: a batch still unfinished this long after it was created is cancelled: what finished
    #: is delivered, what did not run is resubmitted (or escalated, see ``on_expired``)
    batch_deadline_seconds: float | None = attrs.field(default=None, validator=_optional_seconds)
    #: what happens to requests a batch did not run because it expired (or the watchdog
    #: cancelled it): ``"resubmit"`` into a new batch, or ``"realtime"``: sent to the
    #: real-time endpoint at once, at full price
    on_expired: OnExpired = attrs.field(default="resubmit", validator=_on_expired)
    event_hook: Callable[[BatchEvent], object] | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.api_key is None:
            object.__setattr__(self, "api_key", os.environ.get("OPENAI_API_KEY"))
        if self.provider is None:
            object.__setattr__(self, "provider", infer_provider(self.base_url))
        spec = self.capabilities
        name = spec.name
        for option, default in spec.option_defaults().items():
            if getattr(self, option) is None:
                object.__setattr__(self, option, default)
        _check_at_most("batch_size", self.batch_size, spec.max_lines, name)
        _check_at_most("max_batch_lines", self.max_batch_lines, spec.max_lines, name)
        _check_at_most("max_batch_bytes", self.max_batch_bytes, spec.max_bytes, name)
        _check_at_most(
            "max_embedding_inputs", self.max_embedding_inputs, spec.max_embedding_inputs, name
        )
        if not isinstance(self.completion_window, str) or not self.completion_window:
            raise ValueError("completion_window must be a non-empty string such as '24h'")
        spec.check_window(self.completion_window)
        if self.event_hook is not None and not callable(self.event_hook):
            raise TypeError("event_hook must be callable")

    @property
    def capabilities(self) -> Provider:
        """The capability record of :attr:`provider`."""
        return PROVIDERS[self.provider]
