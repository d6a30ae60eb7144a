"""The exception tree of autobatcher.

Names mirror the openai SDK's where the meaning is the same, so code that catches
``openai.RateLimitError`` reads the same with ``autobatcher.RateLimitError``::

    AutobatcherError                 root of everything this library raises
     ├── MissingAPIKeyError          no api_key and no OPENAI_API_KEY; also ValueError
     ├── ClientClosedError           you closed the client: no new requests; also RuntimeError
     │    └── RequestAbortedError    the client stopped before this waiting request's answer
     ├── UnsupportedParameterError   a keyword a batch cannot honour (stream=True); also ValueError
     ├── RequestTooLargeError        one request is larger than a whole batch; also ValueError
     ├── EventLoopError              the client was used from a second event loop; also RuntimeError
     └── APIError                    a request did not get its answer from the API
          │                          (every one: .for_request(custom_id, batch_id), see below)
          ├── InternalError          a bug in autobatcher, not a server problem: please report it
          ├── APIConnectionError     the server could not be reached, or the connection broke
          │    └── APITimeoutError   … because a timeout elapsed
          ├── APIResponseValidationError  a 2xx answer that is not what the Batch API returns
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

Every per-request error carries ``custom_id`` and ``batch_id`` when they are known, and
``str(error)`` appends them: ``"Error code: 429 - Slow down (batch batch_1, request r-7)"``.
``error.for_request(custom_id, batch_id)`` gives a fresh error of the same class with the
same attributes for one caller, so callers sharing one job-wide failure never share (and
mutate) one exception object.

Status errors line up with the openai SDK's (``openai.AsyncOpenAI`` raising for the same
HTTP answer): ``message`` is ``"Error code: 400 - <error.message>"`` (just ``"Error code:
400"`` when the JSON carries no message), ``body`` is the inner ``error`` object of the JSON
(the whole body when there is none), and ``code``/``param``/``type`` are read from it;
``status_code`` and ``request_id`` (the ``x-request-id`` header) as sent. One deliberate
difference: an error given as text (a plain-text body, or ``{"error": "some text"}``, as
some compatible servers send) is appended to ``message``, where the SDK keeps it only in
``body``. Status errors from a batch line are built the same way from
the line's ``response``; their ``response`` is ``None`` (there was no HTTP response of their
own) and ``request_id`` is the line's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
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
    "EventLoopError",
    "InternalError",
    "InternalServerError",
    "MissingAPIKeyError",
    "MissingResultError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestAbortedError",
    "RequestTooLargeError",
    "UnprocessableEntityError",
    "UnsupportedParameterError",
]


class AutobatcherError(Exception):
    """Root of every exception autobatcher raises on purpose."""


class MissingAPIKeyError(AutobatcherError, ValueError):
    """No ``api_key=`` and no ``OPENAI_API_KEY``: refused at construction, as the SDK does."""


class ClientClosedError(AutobatcherError, RuntimeError):
    """The client is closed: you closed it, so it takes no new request (as trio's
    ``ClosedResourceError``). Requests it had already taken are still answered."""


class RequestAbortedError(ClientClosedError):
    """The client stopped the hard way (its block was left by an exception or cancelled, or
    ``close()`` was cancelled) before this request got its answer (as trio's
    ``BrokenResourceError``: something else ended it)."""


class UnsupportedParameterError(AutobatcherError, ValueError):
    """A parameter the Batch API cannot honour was passed (for example ``stream=True``)."""


class RequestTooLargeError(AutobatcherError, ValueError):
    """A single request is larger than a whole batch file may be."""


_E = TypeVar("_E", bound="APIError")


class EventLoopError(AutobatcherError, RuntimeError):
    """The client was first used in one event loop and then called from another.

    A client's connections and waiting requests belong to the loop that started them (an
    ``asyncio.run()`` call, a ``trio.run()``); create the client inside the loop that uses it.
    """


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

    def for_request(self: _E, custom_id: str, batch_id: str | None) -> _E:
        """This error again, for one caller: same class, same attributes, its own ``custom_id``.

        Built through the class's constructor (so whatever it derives is derived again);
        ``batch_id`` stays the original's when it has one. The cause is kept, so tracebacks
        still show what went wrong underneath.
        """
        arguments = self._constructor_arguments()
        arguments["custom_id"] = custom_id
        arguments["batch_id"] = self.batch_id or batch_id
        own = type(self)(**arguments)
        own.__cause__ = self.__cause__
        return own

    def _constructor_arguments(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this error through its constructor.

        A subclass whose constructor takes more extends this (see :class:`APIStatusError`).
        """
        return {
            "message": self.message,
            "request": self.request,
            "body": self.body,
            "code": self.code,
            "param": self.param,
            "type": self.type,
            "custom_id": self.custom_id,
            "batch_id": self.batch_id,
        }

    def __str__(self) -> str:
        where = []
        if self.batch_id:
            where.append(f"batch {self.batch_id}")
        if self.custom_id:
            where.append(f"request {self.custom_id}")
        if where:
            return f"{self.message} ({', '.join(where)})"
        return self.message


class InternalError(APIError):
    """A bug in autobatcher, not a problem with the server: please report it.

    Raised to the waiting callers when something unexpected failed inside the engine; the
    original exception is the ``__cause__``.
    """


class APIResponseValidationError(APIError):
    """The server answered 2xx with something that is not what the Batch API returns.

    (Usually a ``base_url`` that points at something other than an OpenAI-compatible API.)
    """

    status_code: int
    response: httpx.Response | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        response: httpx.Response | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.status_code = status_code
        self.response = response

    def _constructor_arguments(self) -> dict[str, Any]:
        return {
            **super()._constructor_arguments(),
            "status_code": self.status_code,
            "response": self.response,
        }


class APIConnectionError(APIError):
    """The API could not be reached, or the connection broke before an answer came.

    The message defaults to the openai SDK's (``"Connection error."``); autobatcher's own
    messages say which call failed and why.
    """

    def __init__(
        self,
        message: str = "Connection error.",
        *,
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


class APITimeoutError(APIConnectionError):
    """A timeout elapsed while talking to the API (message defaults to the SDK's)."""

    def __init__(
        self,
        message: str = "Request timed out.",
        *,
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


class APIStatusError(APIError):
    """The API answered with a non-2xx status, for a real-time call or for one batch line.

    ``message`` always has the SDK's ``"Error code: <status> - ..."`` form: a message given
    without it is prefixed.
    """

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
        prefix = f"Error code: {status_code}"
        if message != prefix and not message.startswith(prefix + " - "):
            message = f"{prefix} - {message}" if message else prefix
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

    def _constructor_arguments(self) -> dict[str, Any]:
        arguments = super()._constructor_arguments()
        arguments["status_code"] = self.status_code
        arguments["response"] = self.response
        arguments["request_id"] = self.request_id
        return arguments


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
    """Build the typed error for a non-2xx answer, as the openai SDK builds it.

    ``body`` is the decoded JSON (or the text, or None); the error's ``body`` is its inner
    ``error`` object when there is one, and ``message`` is ``"Error code: N - <message>"``.
    ``request_id`` defaults to the response's ``x-request-id`` header.
    """
    # The SDK: ``data = body.get("error", body)``; the message is ``data["message"]``; a
    # text body is kept stripped.
    data = body.get("error", body) if isinstance(body, Mapping) else body
    if isinstance(data, str):
        data = data.strip()
    message = f"Error code: {status_code}"
    code = param = err_type = None
    if isinstance(data, Mapping):
        text = data.get("message")
        if isinstance(text, str) and text:
            message += f" - {text}"
        code = _str_or_none(data.get("code"))
        param = _str_or_none(data.get("param"))
        err_type = _str_or_none(data.get("type"))
    elif isinstance(data, str) and data:
        # Not the SDK's habit (it leaves text bodies out of the message), but a compatible
        # server's plain-text error is the only explanation there is.
        message += f" - {data[:2000]}"
    request = None
    if response is not None:
        if request_id is None:
            request_id = response.headers.get("x-request-id")
        try:
            request = response.request
        except RuntimeError:  # a Response built without its request (tests, transports)
            request = None
    return status_error_class(status_code)(
        message,
        status_code=status_code,
        response=response,
        request=request,
        request_id=request_id,
        body=data,
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

    ``line_error`` is the entry that names this request's line, when the server gave line
    numbers. ``body`` is ``errors`` unless given.
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
        request: httpx.Request | None = None,
        body: object | None = None,
        param: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(
            message,
            request=request,
            body=errors if body is None else body,
            code=code,
            param=param,
            type=type,
            custom_id=custom_id,
            batch_id=batch_id,
        )
        self.errors = errors
        self.line_error = line_error

    def _constructor_arguments(self) -> dict[str, Any]:
        arguments = super()._constructor_arguments()
        arguments["errors"] = self.errors
        arguments["line_error"] = self.line_error
        return arguments


class BatchExpiredError(BatchError):
    """The batch's completion window elapsed before this request ran."""


class BatchCancelledError(BatchError):
    """The batch was cancelled before this request ran."""


class MissingResultError(BatchError):
    """The batch ended without any output or error line for this request."""


class BatchLostError(BatchError):
    """The batch could not be followed any more (it vanished, or polling ran out of patience)."""
