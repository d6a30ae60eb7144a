"""autobatcher: keep your ``AsyncOpenAI`` code, pay Batch API prices.

``await client.chat.completions.create(...)`` calls are collected into Batch API jobs
(JSONL upload, batch creation, polling, result download) and each caller gets back its own
response object or typed error. Works identically on asyncio and trio.
"""

from ._bulk import (
    BatchProgress,
    BulkMap,
    BulkProgress,
    BulkRequest,
    BulkResult,
    BulkResults,
    InvalidBulkRequestError,
)
from ._config import BatcherConfig
from ._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    AutobatcherError,
    BadRequestError,
    BatchCancelledError,
    BatchError,
    BatchExpiredError,
    BatchFailedError,
    BatchLostError,
    BatchRequestError,
    ClientClosedError,
    ConflictError,
    EventLoopError,
    InternalError,
    InternalServerError,
    MissingAPIKeyError,
    MissingResultError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestAbortedError,
    RequestTooLargeError,
    UnprocessableEntityError,
    UnsupportedParameterError,
)
from ._events import BatchEvent
from ._facade import BatchOpenAI, open_batcher
from ._journal import JournalBusyError, JournalError, SqliteStore, Store
from ._resources import NOT_GIVEN, Omit, RawResponse, omit
from ._version import __version__

__all__ = [
    "NOT_GIVEN",
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
    "BatchEvent",
    "BatchExpiredError",
    "BatchFailedError",
    "BatchLostError",
    "BatchOpenAI",
    "BatchProgress",
    "BatchRequestError",
    "BatcherConfig",
    "BulkMap",
    "BulkProgress",
    "BulkRequest",
    "BulkResult",
    "BulkResults",
    "ClientClosedError",
    "ConflictError",
    "EventLoopError",
    "InternalError",
    "InternalServerError",
    "InvalidBulkRequestError",
    "JournalBusyError",
    "JournalError",
    "MissingAPIKeyError",
    "MissingResultError",
    "NotFoundError",
    "Omit",
    "PermissionDeniedError",
    "RateLimitError",
    "RawResponse",
    "RequestAbortedError",
    "RequestTooLargeError",
    "SqliteStore",
    "Store",
    "UnprocessableEntityError",
    "UnsupportedParameterError",
    "__version__",
    "omit",
    "open_batcher",
]
