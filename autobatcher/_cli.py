"""The ``autobatcher`` command line: ``emulate`` (serve the Batch API emulator), ``demo``,
``run`` (see :mod:`autobatcher._run_cli`) and ``journal`` (see :mod:`autobatcher._journal_cli`)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._journal_cli import add_journal_parser, run_journal_command
from ._run_cli import add_run_parser, run_run_command
from ._version import __version__

__all__ = ["EMULATOR_DEFAULTS", "build_parser", "main"]

#: The defaults of ``EmulatorConfig`` fields, as the help text states them. Written out here
#: because the parser must work without the ``emulator`` extra (which ``autobatcher.testing``
#: imports); a test checks them against ``EmulatorConfig`` itself.
EMULATOR_DEFAULTS: dict[str, Any] = {
    "api_key": None,
    "flavour": "openai",
    "max_lines": None,
    "max_file_bytes": None,
    "validation_seconds": 0.0,
    "lines_per_second": None,
    "finalizing_seconds": 0.0,
    "cancelling_seconds": 0.0,
    "expire_after_seconds": None,
    "enqueued_token_limit": None,
    "error_rate": 0.0,
    "rate_limit_rate": 0.0,
    "retry_after_seconds": 0.05,
    "drop_rate": 0.0,
    "fault_seed": None,
    "fault_paths": None,
    "content_ranges": True,
    "content_drop_after_bytes": None,
    "content_drops": 0,
    "shuffle_output": True,
    "embedding_dimensions": 8,
    "known_models": None,
}
_EMULATOR_FIELDS = tuple(EMULATOR_DEFAULTS)
DEFAULT_PORT = 8089


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line on stderr (and status 2), not a usage screen."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def _number(
    kind: Callable[[str], Any], *, low: float, inclusive: bool = True, high: float | None = None
) -> Callable[[str], Any]:
    """An argparse ``type`` for a number in ``[low, high]`` (``(low, high]`` if not inclusive)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        too_low = value < low if inclusive else value <= low
        if too_low or (high is not None and value > high):
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            if high is not None:
                bound = f"between {low:g} and {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _default(name: str, unit: str = "", none: str = "none") -> str:
    value = EMULATOR_DEFAULTS[name]
    if value is None:
        return f"(default: {none})"
    if isinstance(value, float):
        return f"(default: {value:g}{unit})"
    return f"(default: {value}{unit})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autobatcher",
        description="Transparent OpenAI Batch API batching on asyncio and trio.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"autobatcher {__version__}",
        help="print the version and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    emulate = commands.add_parser(
        "emulate",
        help="serve the local Batch API emulator until Ctrl-C",
        description="Serve the Batch API emulator (needs the 'emulator' extra) until Ctrl-C. "
        "Its admin routes: GET /_emulator/stats, POST /_emulator/config.",
    )
    add = emulate.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    add(
        "--port",
        type=_number(int, low=0, high=65535),
        default=DEFAULT_PORT,
        help=f"TCP port, 0-65535; 0 picks a free one (default: {DEFAULT_PORT})",
    )
    add(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop to serve on (default: asyncio)",
    )
    add(
        "--api-key",
        default=None,
        metavar="KEY",
        help="answer 401 to /v1 calls without 'Authorization: Bearer KEY' "
        "(default: none, every call accepted)",
    )
    add(
        "--flavour",
        choices=("openai", "doubleword", "azure", "together", "groq", "generic"),
        default=None,
        help="API dialect: 'doubleword' answers 201 on create, uses UUID ids, also accepts "
        "the '1h' window, mixed models and endpoints in a batch, and serves partial results; "
        "'azure' serves /openai/v1 with an 'api-key' header, 100,000 lines and 500 files, "
        "files 'pending' before 'processed', capitalised statuses, ISO timestamps, no expiry; "
        "'together' wants purpose 'batch-api', wraps the create answer in 'job', upper-case "
        "statuses, 'progress' instead of request counts, 100 MB files; 'groq' serves "
        "/openai/v1 and takes windows from 24h to 7d; 'generic' capitalises statuses, writes "
        "millisecond timestamps, omits request counts and shows file ids from 'finalizing' "
        "(each quirk is also an EmulatorConfig field) "
        f"{_default('flavour')}",
    )
    add(
        "--max-lines",
        type=_number(int, low=1),
        default=None,
        metavar="N",
        help="most requests in one input file "
        + _default("max_lines", none="the flavour's: 50,000; azure 100,000"),
    )
    add(
        "--max-file-bytes",
        type=_number(int, low=1),
        default=None,
        metavar="BYTES",
        help="largest input file, in bytes "
        + _default("max_file_bytes", none="the flavour's: 200 MiB; together 100 MB"),
    )
    add(
        "--validation-seconds",
        type=_number(float, low=0),
        default=None,
        metavar="S",
        help=f"seconds a new batch stays 'validating' {_default('validation_seconds', ' s')}",
    )
    add(
        "--lines-per-second",
        type=_number(float, low=0, inclusive=False),
        default=None,
        metavar="N",
        help="processing speed, in request lines per second "
        f"{_default('lines_per_second', none='unlimited, all lines at once')}",
    )
    add(
        "--finalizing-seconds",
        type=_number(float, low=0),
        default=None,
        metavar="S",
        help=f"seconds a batch stays 'finalizing' {_default('finalizing_seconds', ' s')}",
    )
    add(
        "--cancelling-seconds",
        type=_number(float, low=0),
        default=None,
        metavar="S",
        help=f"seconds a cancelled batch stays 'cancelling' {_default('cancelling_seconds', ' s')}",
    )
    add(
        "--expire-after-seconds",
        type=_number(float, low=0),
        default=None,
        metavar="S",
        help="a batch expires this many seconds after it was created, unfinished lines "
        f"failing with batch_expired {_default('expire_after_seconds', none='never')}",
    )
    add(
        "--enqueued-token-limit",
        type=_number(int, low=0),
        default=None,
        metavar="TOKENS",
        help="a new batch fails (token_limit_exceeded) when the input tokens of running "
        "batches plus its own (file bytes / 4) would exceed this "
        f"{_default('enqueued_token_limit', none='no limit')}",
    )
    add(
        "--error-rate",
        type=float,
        default=None,
        metavar="FRACTION",
        help="share (0-1) of /v1 calls answered with an injected 500, 502 or 503 "
        f"{_default('error_rate')}",
    )
    add(
        "--rate-limit-rate",
        type=float,
        default=None,
        metavar="FRACTION",
        help="share (0-1) of /v1 calls answered with an injected 429 "
        f"{_default('rate_limit_rate')}",
    )
    add(
        "--retry-after-seconds",
        type=_number(float, low=0),
        default=None,
        metavar="S",
        help="retry-after sent with injected 429s and errors, in seconds "
        f"{_default('retry_after_seconds', ' s')}",
    )
    add(
        "--drop-rate",
        type=float,
        default=None,
        metavar="FRACTION",
        help="share (0-1) of /v1 calls whose connection is dropped mid-answer, after the "
        f"call took effect {_default('drop_rate')}",
    )
    add(
        "--fault-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed for the fault draws and the output order, for reproducible runs "
        f"{_default('fault_seed', none='random')}",
    )
    add(
        "--fault-path",
        action="append",
        dest="fault_paths",
        default=None,
        metavar="PREFIX",
        help="inject faults only on paths starting with PREFIX, e.g. /v1/batches; repeatable "
        f"{_default('fault_paths', none='every /v1 path')}",
    )
    add(
        "--no-ranges",
        dest="content_ranges",
        action="store_false",
        default=None,
        help="ignore Range on file downloads and answer the whole file, as a server without "
        "range support (default: ranges honoured, 206 with Content-Range)",
    )
    add(
        "--drop-downloads-after",
        type=_number(int, low=0),
        dest="content_drop_after_bytes",
        default=None,
        metavar="BYTES",
        help="cut file downloads off after this many body bytes (the connection drops "
        "mid-file), --drop-downloads times "
        f"{_default('content_drop_after_bytes', none='never')}",
    )
    add(
        "--drop-downloads",
        type=_number(int, low=0),
        dest="content_drops",
        default=None,
        metavar="N",
        help=f"how many file downloads to cut off {_default('content_drops')}",
    )
    add(
        "--no-shuffle",
        dest="shuffle_output",
        action="store_false",
        default=None,
        help="keep output lines in input order (default: shuffled, as the real API may)",
    )
    add(
        "--embedding-dimensions",
        type=_number(int, low=1),
        default=None,
        metavar="N",
        help="length of fake embedding vectors when a request gives no 'dimensions' "
        f"{_default('embedding_dimensions')}",
    )
    add(
        "--models",
        type=_names,
        action="extend",
        dest="known_models",
        default=None,
        metavar="NAMES",
        help="the only model names that exist (comma-separated; repeatable): a request "
        "naming another fails with 404 model_not_found "
        f"{_default('known_models', none='every name accepted')}",
    )

    demo = commands.add_parser(
        "demo",
        help="run a batching demo against the embedded emulator",
        description="Send concurrent chat requests through autobatcher to an emulator "
        "served on 127.0.0.1 and show the batches it makes.",
    )
    demo.add_argument(
        "-n",
        "--requests",
        type=_number(int, low=1),
        default=1000,
        metavar="N",
        help="concurrent chat requests to send, >= 1 (default: 1000)",
    )
    demo.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop to run on (default: asyncio)",
    )
    demo.add_argument(
        "--batch-size",
        type=_number(int, low=1),
        default=100,
        metavar="N",
        help="most requests per batch, 1-50000 (default: 100)",
    )
    demo.add_argument(
        "--window",
        type=_number(float, low=0),
        default=0.2,
        metavar="S",
        help="seconds a batch waits for more requests before it is sent (default: 0.2)",
    )
    demo.add_argument(
        "--poll",
        type=_number(float, low=0, inclusive=False),
        default=0.2,
        metavar="S",
        help="seconds between batch status polls, > 0 (default: 0.2)",
    )
    add_run_parser(commands)
    add_journal_parser(commands)
    return parser


_EMULATOR_MISSING = (
    "needs the 'emulator' extra ({exc}); from a checkout of this repository: "
    "pip install -e '.[emulator]'"
)


def _emulate(args: argparse.Namespace) -> int:
    try:
        import anyio

        from autobatcher.testing import EmulatorConfig, serve_emulator
    except ImportError as exc:
        print("autobatcher emulate " + _EMULATOR_MISSING.format(exc=exc), file=sys.stderr)
        return 2
    fields: dict[str, Any] = {}
    for name in _EMULATOR_FIELDS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        config = EmulatorConfig(**fields)
    except (TypeError, ValueError) as exc:
        print(f"autobatcher emulate: error: {exc}", file=sys.stderr)
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
        print(f"autobatcher emulate: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import main as demo_main

    return demo_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = list(argv) if argv is not None else sys.argv[1:]
    args = build_parser().parse_args(arguments)
    if args.command == "emulate":
        return _emulate(args)
    if args.command == "journal":
        return run_journal_command(args)
    if args.command == "run":
        return run_run_command(args, arguments, own_process=argv is None)
    return _demo(args)
