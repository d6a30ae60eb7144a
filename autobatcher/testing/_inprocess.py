"""The emulator in-process: an httpx transport that calls its ASGI app, no sockets.

The emulator keeps no background tasks (batches advance lazily on each call, from the
event loop's clock), so nothing but the transport is needed: no server, no lifespan, no
ports. It works on asyncio and trio, and under trio's ``MockClock`` virtual time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx

from ._emulator import Emulator

if TYPE_CHECKING:
    from ._app import ASGIApp, Message, Receive, Scope, Send

__all__ = ["IN_PROCESS_BASE_URL", "EmulatorTransport", "emulator_client"]

#: The base URL to give a client that talks to the emulator through its in-process
#: transport (any host works: the transport never resolves it).
IN_PROCESS_BASE_URL = "http://emulator/v1"


class _ConnectionDropped(Exception):
    """The app stopped in the middle of a response body: the emulator dropped the link.

    Carries what was sent before (the status line, headers and body bytes), which a client
    on a socket would have received before the connection closed.
    """

    def __init__(self, start: Message | None, body: list[bytes]) -> None:
        super().__init__("response body not finished")
        self.start = start
        self.body = body


class _DetectDroppedResponses:
    """Wraps the emulator's app so an unfinished response raises instead of returning.

    Over a socket, the emulator's ``drop`` faults make the server close the connection
    mid-body; in-process there is no connection, so we notice the unfinished body here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        unfinished = False
        start: Message | None = None
        body: list[bytes] = []

        async def watch(message: Message) -> None:
            nonlocal unfinished, start
            if message["type"] == "http.response.start":
                unfinished = True
                start = message
            elif message["type"] == "http.response.body":
                unfinished = bool(message.get("more_body", False))
                if message.get("body"):
                    body.append(message["body"])
            await send(message)

        await self._app(scope, receive, watch)
        if unfinished:
            raise _ConnectionDropped(start, body)


class _BrokenBody(httpx.AsyncByteStream):
    """The bytes that came before a drop, then the error a socket would give."""

    def __init__(self, parts: list[bytes], request: httpx.Request) -> None:
        self._parts = parts
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body "
            "(the emulator dropped it)",
            request=self._request,
        )


class EmulatorTransport(httpx.AsyncBaseTransport):
    """An httpx transport that hands each request to an :class:`Emulator` in this process.

    Give it to any ``httpx.AsyncClient`` (ours, or the openai SDK's ``http_client=``)::

        emulator = Emulator(api_key="sk-test")
        http_client = httpx.AsyncClient(transport=EmulatorTransport(emulator))
        client = BatchOpenAI(base_url="http://emulator/v1", api_key="sk-test",
                             http_client=http_client)

    The emulator's injected connection drops raise :class:`httpx.RemoteProtocolError`, as
    they do over a socket: a response cut off mid-body arrives with the bytes sent before the
    cut, and reading on breaks. Errors inside the emulator itself propagate unchanged.
    """

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._asgi = httpx.ASGITransport(app=_DetectDroppedResponses(emulator.app))

    @property
    def emulator(self) -> Emulator:
        """The emulator this transport calls."""
        return self._emulator

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._asgi.handle_async_request(request)
        except _ConnectionDropped as dropped:
            if dropped.start is None:
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending a response (the emulator dropped it)",
                    request=request,
                ) from None
            # the status and headers arrived, then part of the body: reading it breaks
            return httpx.Response(
                dropped.start["status"],
                headers=list(dropped.start.get("headers", ())),
                stream=_BrokenBody(dropped.body, request),
                request=request,
            )


@asynccontextmanager
async def emulator_client(
    emulator: Emulator | None = None, **config_fields: Any
) -> AsyncIterator[tuple[Emulator, httpx.AsyncClient]]:
    """An emulator and an ``httpx.AsyncClient`` wired to it in-process, closed on exit.

    ``config_fields`` create a new :class:`Emulator` (or, with ``emulator`` given, are
    applied to it via ``configure``), as in :func:`serve_emulator`. The client's base URL is
    ``http://emulator``; point a batcher at ``http://emulator/v1``::

        async with emulator_client(api_key="sk-test") as (emulator, http_client):
            async with open_batcher(base_url="http://emulator/v1", api_key="sk-test",
                                    http_client=http_client) as client:
                ...

    The batcher does not close an ``http_client`` it was given; this block does.
    """
    if emulator is None:
        emulator = Emulator(**config_fields)
    elif config_fields:
        emulator.configure(**config_fields)
    transport = EmulatorTransport(emulator)
    async with httpx.AsyncClient(
        transport=transport, base_url=IN_PROCESS_BASE_URL.removesuffix("/v1")
    ) as http_client:
        yield emulator, http_client
