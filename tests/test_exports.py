"""The public surface is pinned: adding or removing a name is a deliberate act."""

from __future__ import annotations

import autobatcher
import autobatcher.types

EXPECTED = {
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
    "JournalBusyError",
    "JournalError",
    "InternalServerError",
    "InvalidBulkRequestError",
    "MissingAPIKeyError",
    "MissingResultError",
    "NOT_GIVEN",
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
}


def test_public_exports_are_pinned() -> None:
    assert set(autobatcher.__all__) == EXPECTED
    assert len(autobatcher.__all__) == len(EXPECTED)


def test_every_export_exists_and_is_public() -> None:
    for name in autobatcher.__all__:
        obj = getattr(autobatcher, name)
        module = getattr(obj, "__module__", "autobatcher")
        assert module.startswith("autobatcher"), name
    for name in autobatcher.types.__all__:
        assert hasattr(autobatcher.types, name)


def test_errors_mirror_the_sdk_hierarchy() -> None:
    assert issubclass(autobatcher.RateLimitError, autobatcher.APIStatusError)
    assert issubclass(autobatcher.APIStatusError, autobatcher.APIError)
    assert issubclass(autobatcher.APITimeoutError, autobatcher.APIConnectionError)
    assert issubclass(autobatcher.BatchExpiredError, autobatcher.BatchError)
    assert issubclass(autobatcher.BatchError, autobatcher.APIError)
    assert issubclass(autobatcher.APIError, autobatcher.AutobatcherError)
    assert issubclass(autobatcher.ClientClosedError, RuntimeError)
    assert issubclass(autobatcher.UnsupportedParameterError, ValueError)
