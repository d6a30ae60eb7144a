"""The exception tree of autobatcher.

Names mirror the openai SDK's where the meaning is the same, so code that catches
``openai.RateLimitError`` reads the same with ``autobatcher.RateLimitError``::

    AutobatcherError                 root of everything this library raises
     ├── MissingAPIKeyError          no api_key and no OPENAI_API_KEY; also ValueError
     ├── ClientClosedError           the client is closed (or stopped); also RuntimeError
     ├── UnsupportedParameterError   a keyword a batch cannot honour (stream=True); also ValueError
     ├── RequestTooLargeError        one request is larger than a whole batch; also ValueError
     └── APIError                    a request did not get its answer from the API
          ├── APIConnectionError     the server could not be reached, or the connection broke
          │    └── APITimeoutError   … because a timeout elapsed
          ├── APIStatusError         a non-2xx status (real-time call, or one batch line)
          │    ├── BadRequestError            400
          │    ├── AuthenticationError        401
          │    ├── PermissionDeniedError      403
          │    ├── NotFoundError              404
          │    ├── ConflictError              409
          │    ├── UnprocessableEntityError   422
          │    ├── RateLimitError             429
          │    └── InternalServerError        >= 500
          └── BatchError             batch-specific outcomes, all carrying ``batch_id``
               ├── BatchRequestError   the batch answered with an ``error{code, message}`` line
               ├── BatchFailedError    the whole batch failed (validation, token limit, …)
               ├── BatchExpiredError   the completion window elapsed before this request ran
               ├── BatchCancelledError the batch was cancelled before this request ran
               ├── MissingResultError  the batch ended without any line for this request
               └── BatchLostError      the batch could not be followed (vanished, polling gave up)

Every per-request error carries ``custom_id`` and ``batch_id`` when they are known.
Status errors from a batch line have ``response`` set to ``None`` (there was no HTTP response
of their own); ``status_code``, ``code``, ``message``, ``request_id`` and ``body`` are filled
from the line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "AutobatcherError",
    "BadRequestError",
    "BatchCancelledError",
    "BatchError",
    "BatchExpiredError",
    "BatchFailedError",
    "BatchLostError",
    "BatchRequestError",
    "ClientClosedError",
    "ConflictError",
    "InternalServerError",
    "MissingAPIKeyError",
    "MissingResultError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "UnprocessableEntityError",
    "UnsupportedParameterError",
]


class AutobatcherError(Exception):
    """Root of every exception autobatcher raises on purpose."""


class MissingAPIKeyError(AutobatcherError, ValueError):
    """No ``api_key=`` and no ``OPENAI_API_KEY``: refused at construction, as the SDK does."""


class ClientClosedError(AutobatcherError, RuntimeError):
    """The client is closed (or its engine stopped); it cannot take or finish this call."""


class UnsupportedParameterError(AutobatcherError, ValueError):
    """A parameter the Batch API cannot honour was passed (for example ``stream=True``)."""


class RequestTooLargeError(AutobatcherError, ValueError):
    """A single request is larger than a whole batch file may be."""


class APIError(AutobatcherError):
    """A request did not get its answer from the API."""

    message: str
    request: httpx.Request | None
    body: object | None
    code: str | None
    param: str | None
    type: str | None
    custom_id: str | None
    batch_id: str | None

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        body: object | None = None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        custom_id: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body
        self.code = code
        self.param = param
        self.type = type
        self.custom_id = custom_id
        self.batch_id = batch_id

    def __str__(self) -> str:
        where = []
        if self.batch_id:
            where.append(f"batch {self.batch_id}")
        if self.custom_id:
            where.append(f"request {self.custom_id}")
        if where:
            return f"{self.message} ({', '.join(where)})"
        return self.message


class APIConnectionError(APIError):
    """The API could not be reached, or the connection broke before an answer came."""


class APITimeoutError(APIConnectionError):
    """A timeout elapsed while talking to the API."""


class APIStatusError(APIError):
    """The API answered with a non-2xx status, for a real-time call or for one batch line."""

    status_code: int
    response: httpx.Response | None
    request_id: str | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        response: httpx.Response | None = None,
        request_id: str | None = None,
        request: httpx.Request | None = None,
        body: object | None = None,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        custom_id: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            request=request,
            body=body,
            code=code,
            param=param,
            type=type,
            custom_id=custom_id,
            batch_id=batch_id,
        )
        self.status_code = status_code
        self.response = response
        self.request_id = request_id

    def __str__(self) -> str:
        return f"Error code: {self.status_code} - {super().__str__()}"


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404."""


class ConflictError(APIStatusError):
    """409."""


class UnprocessableEntityError(APIStatusError):
    """422."""


class RateLimitError(APIStatusError):
    """429."""


class InternalServerError(APIStatusError):
    """500 and above."""


_STATUS_CLASSES: Mapping[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The class the openai SDK would raise for this HTTP status."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status_code, APIStatusError)


def make_status_error(
    status_code: int,
    body: object,
    *,
    response: httpx.Response | None = None,
    request_id: str | None = None,
    custom_id: str | None = None,
    batch_id: str | None = None,
) -> APIStatusError:
    """Build the typed error for a non-2xx answer from its (JSON or plain-text) body."""
    message: str | None = None
    code = param = err_type = None
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        raw_message = error.get("message")
        message = raw_message if isinstance(raw_message, str) else None
        code = _str_or_none(error.get("code"))
        param = _str_or_none(error.get("param"))
        err_type = _str_or_none(error.get("type"))
    elif isinstance(body, Mapping) and isinstance(body.get("message"), str):
        message = body["message"]
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:2000]
    if not message:
        message = f"HTTP {status_code}"
    return status_error_class(status_code)(
        message,
        status_code=status_code,
        response=response,
        request=response.request if response is not None else None,
        request_id=request_id,
        body=body,
        code=code,
        param=param,
        type=err_type,
        custom_id=custom_id,
        batch_id=batch_id,
    )


def _str_or_none(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


class BatchError(APIError):
    """Base of the batch-specific outcomes; ``batch_id`` tells which upstream batch."""


class BatchRequestError(BatchError):
    """The batch answered this request with an ``error{code, message}`` line."""


class BatchFailedError(BatchError):
    """The whole batch failed; ``errors`` holds the server's ``errors.data`` entries.

    ``line_error`` is the entry that names this request's line, when the server gave line numbers.
    """

    errors: Sequence[Mapping[str, Any]]
    line_error: Mapping[str, Any] | None

    def __init__(
        self,
        message: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        line_error: Mapping[str, Any] | None = None,
        code: str | None = None,
        custom_id: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, custom_id=custom_id, batch_id=batch_id, body=errors)
        self.errors = errors
        self.line_error = line_error


class BatchExpiredError(BatchError):
    """The batch's completion window elapsed before this request ran."""


class BatchCancelledError(BatchError):
    """The batch was cancelled before this request ran."""


class MissingResultError(BatchError):
    """The batch ended without any output or error line for this request."""


class BatchLostError(BatchError):
    """The batch could not be followed any more (it vanished, or polling ran out of patience)."""
