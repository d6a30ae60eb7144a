"""Serving the emulator on loopback with hypercorn, on the running anyio backend."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import sniffio
from hypercorn.config import Config, Sockets

from ._emulator import Emulator

__all__ = ["EmulatorServer", "serve_emulator"]

_log = logging.getLogger("autobatcher.testing")


@attrs.frozen
class EmulatorServer:
    """A running emulator: where it listens and the :class:`Emulator` behind it."""

    emulator: Emulator
    host: str
    port: int

    @property
    def url(self) -> str:
        """The server root, ``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://host:port/v1`` (``…/openai/v1`` for the
        flavours whose API lives under a prefix: Azure, Groq)."""
        return f"{self.url}{self.emulator.config.api_root}"


class _PreboundConfig(Config):
    """A hypercorn config that serves on a socket we already bound (so port 0 works)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def create_sockets(self) -> Sockets:
        return Sockets(secure_sockets=[], insecure_sockets=[self._sock], quic_sockets=[])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Every connection needs TCP_NODELAY: a response written in two sends (headers, then
    # body) otherwise waits for the client's delayed ACK, ~40 ms per call. trio sets it on
    # each accepted socket itself; asyncio does so only when the socket's ``proto`` says TCP
    # (accepted sockets copy the listener's), so the listener is created with IPPROTO_TCP.
    # It also carries the option, which Linux and the BSDs pass on to accepted sockets.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def serve_emulator(
    emulator: Emulator | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    graceful_timeout: float = 1.0,
    **config_fields: Any,
) -> AsyncIterator[EmulatorServer]:
    """Serve an emulator over HTTP until the block exits.

    Runs hypercorn on the current anyio backend (asyncio or trio) in a task group owned by
    this context manager. The socket is listening before the block starts (``port=0``
    picks a free port; read it from ``server.port``). ``config_fields`` create a new
    :class:`Emulator` (or, with ``emulator`` given, are applied to it via ``configure``).
    """
    if emulator is None:
        emulator = Emulator(**config_fields)
    elif config_fields:
        emulator.configure(**config_fields)
    sock = _bind(host, port)
    bound_port: int = sock.getsockname()[1]
    config = _PreboundConfig(sock)
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = _log
    config.keep_alive_timeout = 30.0
    app: Any = emulator.app
    stop = anyio.Event()

    async def trigger() -> None:
        await stop.wait()

    backend = sniffio.current_async_library()
    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            if backend == "trio":
                from hypercorn.trio import serve as trio_serve

                await tg.start(_trio_serve, trio_serve, app, config, trigger)
            else:
                from hypercorn.asyncio import serve as asyncio_serve

                tg.start_soon(_asyncio_serve, asyncio_serve, app, config, trigger)
            try:
                yield EmulatorServer(emulator=emulator, host=host, port=bound_port)
            except BaseException as exc:
                # Keep the block's exception out of the task group (so it comes out
                # unwrapped) and let the server shut down gracefully instead of being
                # cancelled mid-cleanup.
                error = exc
            finally:
                stop.set()
    finally:
        sock.close()
    if error is not None:
        raise error


async def _trio_serve(
    serve: Any, app: Any, config: Config, trigger: Any, *, task_status: Any
) -> None:
    # Shielded: the server always stops through its shutdown trigger, which the owner sets
    # on exit, so the shutdown is graceful and bounded by ``graceful_timeout``.
    with anyio.CancelScope(shield=True):
        await serve(app, config, shutdown_trigger=trigger, task_status=task_status)


async def _asyncio_serve(serve: Any, app: Any, config: Config, trigger: Any) -> None:
    with anyio.CancelScope(shield=True):
        await serve(app, config, shutdown_trigger=trigger)
