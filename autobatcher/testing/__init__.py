"""A local Batch API emulator for tests, demos and offline development.

``Emulator`` is the state plus an ASGI app; ``serve_emulator`` serves it on loopback with
hypercorn on the running anyio backend (asyncio or trio). Needs the ``emulator`` extra
(starlette, python-multipart, hypercorn).

Per-request markers in a request's text: ``[[status:NNN]]``, ``[[error:CODE]]``,
``[[drop]]`` and (moderations) ``[[flag]]``.
"""

from __future__ import annotations

from ._config import EmulatorConfig, EmulatorStats
from ._emulator import BatchRecord, Emulator, FileRecord
from ._server import EmulatorServer, serve_emulator

__all__ = [
    "BatchRecord",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorStats",
    "FileRecord",
    "serve_emulator",
]
