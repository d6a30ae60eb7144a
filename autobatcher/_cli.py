"""The ``autobatcher`` command line: ``emulate`` (serve the Batch API emulator) and ``demo``."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autobatcher",
        description="Transparent OpenAI Batch API batching on asyncio and trio.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    emulate = commands.add_parser(
        "emulate",
        help="serve the local Batch API emulator until Ctrl-C",
        description="Serve the Batch API emulator (needs the 'emulator' extra).",
    )
    emulate.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    emulate.add_argument("--port", type=int, default=8089, help="port (default: 8089; 0 = any)")
    emulate.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    emulate.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    emulate.add_argument("--flavour", choices=("openai", "doubleword"), default="openai")
    emulate.add_argument("--max-lines", type=int, default=None)
    emulate.add_argument("--max-file-bytes", type=int, default=None)
    emulate.add_argument("--validation-seconds", type=float, default=None)
    emulate.add_argument("--lines-per-second", type=float, default=None)
    emulate.add_argument("--finalizing-seconds", type=float, default=None)
    emulate.add_argument("--cancelling-seconds", type=float, default=None)
    emulate.add_argument("--expire-after-seconds", type=float, default=None)
    emulate.add_argument("--enqueued-token-limit", type=int, default=None)
    emulate.add_argument("--error-rate", type=float, default=None)
    emulate.add_argument("--rate-limit-rate", type=float, default=None)
    emulate.add_argument("--retry-after-seconds", type=float, default=None)
    emulate.add_argument("--drop-rate", type=float, default=None)
    emulate.add_argument("--fault-seed", type=int, default=None)
    emulate.add_argument(
        "--fault-path",
        action="append",
        dest="fault_paths",
        default=None,
        help="restrict faults to this path prefix (repeatable)",
    )
    emulate.add_argument(
        "--no-shuffle",
        dest="shuffle_output",
        action="store_false",
        default=None,
        help="keep output lines in input order",
    )
    emulate.add_argument("--embedding-dimensions", type=int, default=None)

    demo = commands.add_parser("demo", help="run a batching demo against the embedded emulator")
    demo.add_argument("-n", "--requests", type=int, default=1000)
    demo.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    demo.add_argument("--batch-size", type=int, default=100)
    demo.add_argument("--window", type=float, default=0.2)
    demo.add_argument("--poll", type=float, default=0.2)
    return parser


_EMULATOR_FIELDS = (
    "api_key",
    "flavour",
    "max_lines",
    "max_file_bytes",
    "validation_seconds",
    "lines_per_second",
    "finalizing_seconds",
    "cancelling_seconds",
    "expire_after_seconds",
    "enqueued_token_limit",
    "error_rate",
    "rate_limit_rate",
    "retry_after_seconds",
    "drop_rate",
    "fault_seed",
    "fault_paths",
    "shuffle_output",
    "embedding_dimensions",
)


def _emulate(args: argparse.Namespace) -> int:
    try:
        import anyio

        from autobatcher.testing import EmulatorConfig, serve_emulator
    except ImportError as exc:
        print(
            f"autobatcher emulate needs the 'emulator' extra ({exc}); "
            "install it with: pip install 'autobatcher[emulator]'",
            file=sys.stderr,
        )
        return 2
    fields: dict[str, Any] = {}
    for name in _EMULATOR_FIELDS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        config = EmulatorConfig(**fields)
    except (TypeError, ValueError) as exc:
        print(f"autobatcher emulate: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        from autobatcher.testing import Emulator

        # Ctrl-C / SIGTERM arrive as a message, not as KeyboardInterrupt raised at a random
        # point inside the server, so the shutdown is always graceful.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with serve_emulator(Emulator(config), host=args.host, port=args.port) as server:
                print(
                    f"autobatcher emulator ({config.flavour}) serving at {server.base_url} "
                    "(Ctrl-C to stop)",
                    flush=True,
                )
                async for _ in signals:
                    break

    try:
        anyio.run(run, backend=args.backend)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    except OSError as exc:
        print(f"autobatcher emulate: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import main as demo_main

    return demo_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.command == "emulate":
        return _emulate(args)
    return _demo(args)
