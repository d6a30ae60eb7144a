"""The one retry policy: what is worth trying again, how long to wait, and for how long.

Two scales of patience, one set of rules:

* a single HTTP call is retried up to ``max_retries`` times with exponential backoff (capped
  at ``call_max_delay``), honouring the server's ``retry-after-ms`` / ``retry-after`` and
  ``x-should-retry``;
* a batch job that already exists upstream (its file is uploaded) lives for hours, so a step
  that keeps failing transiently is tried again, from where it stopped, for up to
  ``job_budget_seconds`` of one *spell* of trouble (consecutive failures with no progress).

Everything that decides (classification, delay, budget) is here; the wire and the job runner
only ask. ``sleep_scale=0`` makes every wait instant, for tests.
"""

from __future__ import annotations

import email.utils
import random
import time

import anyio
import attrs
import httpx

from ._errors import APIConnectionError, APIError, APIStatusError

__all__ = ["RetryPolicy", "Spell", "retry_after_seconds"]

_RETRYABLE_STATUS = frozenset({408, 409, 429})


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The server's own hint: ``retry-after-ms``, then ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed)) - time.time()


@attrs.frozen(kw_only=True)
class RetryPolicy:
    max_retries: int = 2
    initial_delay: float = 0.5
    call_max_delay: float = 8.0
    job_max_delay: float = 30.0
    #: a server hint longer than this is ignored (our own backoff applies instead)
    max_retry_after: float = 60.0
    job_budget_seconds: float = 600.0
    sleep_scale: float = 1.0

    # -- classification -------------------------------------------------------------------------

    @staticmethod
    def response_is_retryable(response: httpx.Response) -> bool:
        """A non-2xx answer worth sending again: the server's ``x-should-retry`` decides first."""
        hint = response.headers.get("x-should-retry")
        if hint == "true":
            return True
        if hint == "false":
            return False
        return status_is_retryable(response.status_code)

    @classmethod
    def is_transient(cls, error: APIError) -> bool:
        """Worth trying again later: connection trouble, timeouts, 408/409/429 and 5xx.

        An error built from a result *line* (``custom_id`` set) is the answer to that request,
        not trouble on the way, and is never retried here.
        """
        if isinstance(error, APIConnectionError):
            return True
        if isinstance(error, APIStatusError) and error.custom_id is None:
            if error.response is not None:
                return cls.response_is_retryable(error.response)
            return status_is_retryable(error.status_code)
        return False

    # -- delays ---------------------------------------------------------------------------------

    def call_delay(self, attempt: int, headers: httpx.Headers | None = None) -> float:
        """How long to wait before retry number ``attempt + 1`` of one call."""
        if headers is not None:
            told = retry_after_seconds(headers)
            if told is not None and 0 <= told <= self.max_retry_after:
                return told
        delay = min(self.initial_delay * (2.0**attempt), self.call_max_delay)
        return delay * (1.0 - 0.25 * random.random())

    def job_delay(self, failures: int) -> float:
        """How long a job waits before trying a failed step again."""
        delay = min(self.initial_delay * 2.0**failures, self.job_max_delay)
        return delay * (0.75 + 0.25 * random.random())

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds * self.sleep_scale)


def status_is_retryable(status_code: int) -> bool:
    return status_code in _RETRYABLE_STATUS or status_code >= 500


class Spell:
    """One spell of trouble of a job: consecutive failures of one step with no progress between.

    A failure after the job got further starts a fresh spell (and a fresh budget), so a blip at
    upload does not shorten the patience for a download hours later.
    """

    __slots__ = ("failures", "policy", "started_at", "step")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.step: object = None
        self.started_at = 0.0
        self.failures = 0

    def next_delay(self, step: object, error: APIError) -> float | None:
        """The wait before trying ``step`` again after ``error``, or None to give up.

        The spell is measured on the event loop's clock, so virtual time drives it in tests.
        """
        now = anyio.current_time()
        if step != self.step:
            self.step, self.started_at, self.failures = step, now, 0
        if not self.policy.is_transient(error):
            return None
        if now - self.started_at > self.policy.job_budget_seconds:
            return None
        delay = self.policy.job_delay(self.failures)
        self.failures += 1
        return delay

    @property
    def first(self) -> bool:
        """True on the first failure of this spell (when it is worth one WARNING line)."""
        return self.failures == 1

    def reset(self) -> None:
        self.step = None
        self.failures = 0
