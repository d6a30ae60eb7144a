"""Every async test runs on both anyio backends.

The fixture is ours (not anyio's default) so that a missing trio fails loudly
instead of silently skipping half the matrix.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    if backend == "trio":
        import trio  # noqa: F401  -- a missing trio must fail, not skip
    return backend
