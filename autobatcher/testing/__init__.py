"""A local Batch API emulator for tests, demos and offline development.

``Emulator`` is the state plus an ASGI app. Reach it one of two ways:

* in-process, with no sockets: ``emulator_client(...)`` (or ``Emulator.transport()`` /
  ``EmulatorTransport``) gives an ``httpx.AsyncClient`` to hand to
  ``BatchOpenAI(base_url="http://emulator/v1", http_client=...)``;
* over loopback HTTP: ``serve_emulator(...)`` runs hypercorn on 127.0.0.1 on the running
  anyio backend (``autobatcher emulate`` does the same from the command line).

Both need the ``emulator`` extra (starlette, python-multipart, and hypercorn for the server)
and work on asyncio and trio. Batches advance lazily on each call, timed by the event
loop's clock (``anyio.current_time()``), so under trio's ``MockClock(autojump_threshold=0)``
a test runs a whole day of batch lifecycle (validation, processing, polls, expiry of the
24 h window) in milliseconds.

Markers in a request's text inject per-request outcomes:

* ``[[status:NNN]]`` — the request fails with HTTP status NNN (in a batch: a line with
  ``response.status_code`` NNN in the error file); ``[[status:NNN:once]]`` (or ``:N``)
  fails only the first (N) execution(s) of that very body, then it succeeds;
* ``[[error:CODE]]`` — (batch) the line comes back as ``{"response": null, "error": {...}}``;
* ``[[drop]]`` — (batch) the request gets no line in either file;
* ``[[invalid]]`` — the whole batch fails validation, with an ``errors.data`` entry
  ``{code, message, param, line}`` naming this request's line; a real-time call answers 400;
* ``[[flag]]`` — (moderations) the input is flagged.

Faults that are not about one request: the ``EmulatorConfig`` rates (connection drops, 429s,
5xx), downloads cut off mid-file (``content_drop_after_bytes``, ``content_drops``) and
``Emulator.lose_batch(batch_id)`` (the server forgets a batch: later calls 404). File
downloads honour ``Range`` unless ``content_ranges=False``.

Admin endpoints, for a server in another process (``autobatcher emulate``):
``GET /_emulator/stats``, ``POST /_emulator/config`` (a JSON object of ``EmulatorConfig``
changes) and ``POST /_emulator/batches/{batch_id}/lose``.
"""

from __future__ import annotations

from ._config import EmulatorConfig, EmulatorStats
from ._emulator import BatchRecord, Emulator, FileRecord
from ._inprocess import IN_PROCESS_BASE_URL, EmulatorTransport, emulator_client
from ._server import EmulatorServer, serve_emulator

__all__ = [
    "IN_PROCESS_BASE_URL",
    "BatchRecord",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorStats",
    "EmulatorTransport",
    "FileRecord",
    "emulator_client",
    "serve_emulator",
]
