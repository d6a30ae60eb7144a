"""``autobatcher run INPUT.jsonl -o OUTPUT.jsonl``: a Batch API input file in, its output out.

The input is in the Batch API's input format (``custom_id``, ``method``, ``url``, ``body``);
the output gets one line per answer, in its output format, appended as answers arrive. The
requests go through ``client.map()`` with a journal beside the output, so running the same
command again after a crash, a kill -9 or Ctrl-C finishes the job: requests whose answer the
output holds are skipped, answers the journal holds are written without a network call,
batches still running upstream are attached to, and only requests that never reached a
batch are sent. (See :mod:`autobatcher._bulk_io` for what each file records.)

Exit status: 0 every request answered with success; 3 the job finished but some requests
failed, did not run (a re-run sends those again) or were rejected as bad input; 4 ``--strict``
found bad lines and sent nothing; 130 interrupted (re-run to finish); 1 the job could not run
(an unreadable file, no key, a journal in use); 2 a bad command line, or an output that belongs
to another input.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import signal
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TextIO

import anyio
import attrs
import httpx

from ._bulk import (
    BulkMap,
    BulkRequest,
    BulkResult,
    BulkResults,
    InvalidBulkRequestError,
    encoded_request,
)
from ._bulk_io import (
    InputChunk,
    InputFingerprint,
    InputProblem,
    InputReader,
    OutputRecovery,
    OutputWriter,
    fingerprint_input,
    read_state,
    recover_output,
    usage_of_body,
    write_state,
)
from ._errors import (
    AutobatcherError,
    BatchCancelledError,
    BatchExpiredError,
    BatchFailedError,
    BatchLostError,
    BatchRequestError,
    MissingResultError,
)
from ._jsonl import decode_json
from ._run_progress import LiveDisplay, Progress, format_count, format_duration, render_line

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STRICT",
    "EXIT_USAGE",
    "Prices",
    "RunOptions",
    "RunRefused",
    "RunSummary",
    "add_run_parser",
    "run_job",
    "run_run_command",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_STRICT = 4
EXIT_INTERRUPTED = 130

#: buffered output is handed to the kernel at this size, or this often
_FLUSH_BYTES = 1 << 20
_FLUSH_SECONDS = 0.5
#: the state file (what ``--status`` shows of a running job) is rewritten this often
_STATE_SECONDS = 2.0
_READ_CHUNK_LINES = 2000
#: one output line's JSON (compact, as the Batch API writes it)


class RunRefused(AutobatcherError):
    """The job cannot start as asked (the message says why); ``exit_status`` says how."""

    def __init__(self, message: str, exit_status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@attrs.frozen
class Prices:
    """Prices in dollars per million tokens: per model (the longest matching prefix wins, so
    ``gpt-4o-mini`` prices ``gpt-4o-mini-2024-07-18``), else the default."""

    default_input: float | None = None
    default_output: float | None = None
    by_model: Mapping[str, tuple[float, float]] = attrs.field(factory=dict)

    def of(self, model: str) -> tuple[float, float] | None:
        best = max((name for name in self.by_model if model.startswith(name)), key=len, default="")
        if best:
            return self.by_model[best]
        if self.default_input is None and self.default_output is None:
            return None
        return (self.default_input or 0.0, self.default_output or 0.0)

    @classmethod
    def load(
        cls, path: str | None, input_price: float | None, output_price: float | None
    ) -> Prices | None:
        """From ``--prices FILE`` and the two flags (the flags price every model the file does
        not name). The file is JSON: ``{"gpt-4o-mini": {"input": 0.075, "output": 0.3}}``,
        with ``"*"`` for every other model."""
        by_model: dict[str, tuple[float, float]] = {}
        if path is not None:
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise RunRefused(f"cannot read price file {path}: {exc}", EXIT_USAGE) from None
            if not isinstance(data, dict):
                raise RunRefused(f"price file {path}: expected a JSON object", EXIT_USAGE)
            for model, entry in data.items():
                try:
                    pair = (float(entry["input"]), float(entry["output"]))
                except (TypeError, KeyError, ValueError):
                    raise RunRefused(
                        f"price file {path}: {model!r} needs numbers 'input' and 'output' "
                        "(dollars per million tokens)",
                        EXIT_USAGE,
                    ) from None
                if model == "*":
                    input_price = pair[0] if input_price is None else input_price
                    output_price = pair[1] if output_price is None else output_price
                else:
                    by_model[model] = pair
        if not by_model and input_price is None and output_price is None:
            return None
        return cls(input_price, output_price, by_model)

    def cost(self, tokens_by_model: Mapping[str, Sequence[int]]) -> tuple[float, float, list[str]]:
        """(input dollars, output dollars, models without a price)."""
        spent_in = spent_out = 0.0
        unpriced = []
        for model, (prompt, completion) in sorted(tokens_by_model.items()):
            price = self.of(model)
            if price is None:
                if prompt or completion:
                    unpriced.append(model or "(unnamed)")
                continue
            spent_in += prompt * price[0] / 1e6
            spent_out += completion * price[1] / 1e6
        return spent_in, spent_out, unpriced


@attrs.frozen(kw_only=True)
class RunOptions:
    """What ``autobatcher run`` was asked to do (the command line, parsed)."""

    input: Path
    output: Path
    journal: Path | None = None  # default: OUTPUT.journal
    errors: Path | None = None  # default: OUTPUT.errors
    base_url: str | None = None
    model: str | None = None
    batch_size: int = 50_000
    window: float = 30.0
    poll_interval: float | None = None
    completion_window: str | None = None
    max_batches_in_flight: int | None = None
    strict: bool = False
    dry_run: bool = False
    progress: str = "auto"  # auto, live, log, none
    log_interval: float = 10.0
    prices: Prices | None = None
    json: bool = False
    #: the command as typed, for "run it again to finish"
    command: str = ""

    @property
    def journal_path(self) -> Path:
        return self.journal or self.output.with_name(self.output.name + ".journal")

    @property
    def errors_path(self) -> Path:
        return self.errors or self.output.with_name(self.output.name + ".errors")

    @property
    def state_path(self) -> Path:
        return state_path_of(self.output)


def state_path_of(output: Path) -> Path:
    return output.with_name(output.name + ".state")


@attrs.define
class RunSummary:
    """How a run ended, with the figures the summary prints."""

    status: str  # finished, interrupted, refused (--strict), dry-run
    exit_status: int
    input_lines: int = 0
    rejected: int = 0
    sent: int = 0  # requests handed to the client this run
    answered: int = 0  # output lines written this run
    failed: int = 0  # of those, failures
    not_run: int = 0
    done_before: int = 0
    output_ok: int = 0  # over the whole output, earlier runs included
    output_failed: int = 0
    batches: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_by_model: dict[str, list[int]] = attrs.field(factory=dict)
    cost: tuple[float, float, list[str]] | None = None
    elapsed: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        if self.cost is not None:
            data["cost"] = {
                "input": self.cost[0],
                "output": self.cost[1],
                "total": self.cost[0] + self.cost[1],
                "unpriced_models": self.cost[2],
            }
        return data


# -- the command line -------------------------------------------------------------------------


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_run_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="send a Batch API input file (JSONL) through batches; write its output",
        description="Send every request of INPUT (the Batch API's input format: custom_id, "
        "method, url, body) through Batch API batches and append each answer to OUTPUT (its "
        "output format) as it arrives. The key comes from OPENAI_API_KEY. Resumable: run the "
        "same command again after a crash or Ctrl-C and it finishes the job, sending nothing "
        "twice and writing no line twice (OUTPUT.journal records what was sent).",
        epilog="exit status: 0 all answered with success; 3 finished, but some requests failed, "
        "did not run (run again to retry them) or were rejected (see OUTPUT.errors); 4 --strict "
        "found bad lines, nothing sent; 130 interrupted (run again to finish); 1 could not run; "
        "2 bad arguments, or OUTPUT belongs to another input.",
    )
    add = run.add_argument
    add(
        "input",
        nargs="?",
        metavar="INPUT",
        help="the requests, one JSON object a line (default: none; needed except with --status)",
    )
    add("-o", "--output", required=True, metavar="OUTPUT", help="the answers (required)")
    add(
        "--base-url",
        metavar="URL",
        default=None,
        help="an OpenAI-compatible API (default: OPENAI_BASE_URL, then https://api.openai.com/v1)",
    )
    add(
        "--model",
        metavar="NAME",
        default=None,
        help="send every request to this model instead (default: each line's own)",
    )
    add(
        "--batch-size",
        type=_positive(int),
        default=50_000,
        metavar="N",
        help="most requests per batch (default: 50000, the OpenAI limit)",
    )
    add(
        "--window",
        type=_non_negative_float,
        default=30.0,
        metavar="S",
        help="seconds a part-filled batch waits for more requests (a file fills a batch "
        "sooner; the end of the input sends the last one at once) (default: 30)",
    )
    add(
        "--poll-interval",
        type=_positive(float),
        default=None,
        metavar="S",
        help="seconds between status polls of a batch (default: the provider's; 5 for OpenAI)",
    )
    add(
        "--completion-window",
        default=None,
        metavar="WINDOW",
        help="the batches' completion window (default: the provider's; 24h for OpenAI)",
    )
    add(
        "--max-batches-in-flight",
        type=_positive(int),
        default=None,
        metavar="N",
        help="at most N batches uploading or running at once; the command reads at most N "
        "batches' worth of requests ahead of the answers (default: no limit on batches, "
        "and whole batches' worth of at least 100,000 requests read ahead)",
    )
    add(
        "--journal",
        default=None,
        metavar="PATH",
        help="the journal that makes the job resumable (default: OUTPUT.journal)",
    )
    add(
        "--errors",
        default=None,
        metavar="PATH",
        help="where rejected input lines and requests that did not run are listed, one JSON "
        "object a line (default: OUTPUT.errors)",
    )
    add(
        "--strict",
        action="store_true",
        help="refuse the whole input if any line is bad (default: off, the good lines are sent)",
    )
    add(
        "--dry-run",
        action="store_true",
        help="check the input and show what would be sent (requests, bytes, batches, "
        "estimated tokens and cost); send nothing (default: off)",
    )
    add(
        "--status",
        action="store_true",
        help="show how far the job writing OUTPUT got (running or interrupted), and exit "
        "(default: off)",
    )
    add(
        "--price-per-1m-input",
        type=_non_negative_float,
        default=None,
        metavar="USD",
        help="dollars per million input tokens, for the cost estimate (default: none)",
    )
    add(
        "--price-per-1m-output",
        type=_non_negative_float,
        default=None,
        metavar="USD",
        help="dollars per million output tokens, for the cost estimate (default: none)",
    )
    add(
        "--prices",
        default=None,
        metavar="FILE",
        help='prices per model, JSON: {"gpt-4o-mini": {"input": 0.075, "output": 0.3}, '
        '"*": {...}} (dollars per million tokens; the longest matching model prefix wins) '
        "(default: none)",
    )
    add(
        "--progress",
        choices=("auto", "live", "log", "none"),
        default="auto",
        help="'live': a display on the terminal (needs rich: pip install -e '.[cli]'); "
        "'log': a line every --log-interval seconds; 'auto': live when stderr is a terminal "
        "and rich is installed, else log (default: auto). Both go to stderr",
    )
    add(
        "--log-interval",
        type=_positive(float),
        default=10.0,
        metavar="S",
        help="seconds between progress lines in 'log' mode (default: 10)",
    )
    add(
        "--json",
        action="store_true",
        help="print the summary (or status, or --dry-run figures) as JSON (default: text)",
    )
    add(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop to run on (default: asyncio)",
    )


def options_from_args(args: argparse.Namespace, argv: Sequence[str]) -> RunOptions:
    prices = Prices.load(args.prices, args.price_per_1m_input, args.price_per_1m_output)
    return RunOptions(
        input=Path(args.input),
        output=Path(args.output),
        journal=Path(args.journal) if args.journal else None,
        errors=Path(args.errors) if args.errors else None,
        base_url=args.base_url,
        model=args.model,
        batch_size=args.batch_size,
        window=args.window,
        poll_interval=args.poll_interval,
        completion_window=args.completion_window,
        max_batches_in_flight=args.max_batches_in_flight,
        strict=args.strict,
        dry_run=args.dry_run,
        progress=args.progress,
        log_interval=args.log_interval,
        prices=prices,
        json=args.json,
        command="autobatcher " + shlex.join(argv),
    )


def run_run_command(
    args: argparse.Namespace, argv: Sequence[str], *, own_process: bool = False
) -> int:
    """``autobatcher run``: parse, run on the chosen backend, print the summary.
    ``own_process``: this is the process's command (not a call from a program or a test), so
    the process-wide garbage collector may be tuned for it."""
    if args.status:
        try:
            return print_status(Path(args.output), as_json=args.json, out=sys.stdout)
        except (OSError, AutobatcherError) as exc:
            print(f"autobatcher run --status: {exc}", file=sys.stderr)
            return EXIT_ERROR
    if args.input is None:
        print("autobatcher run: error: INPUT is required (except with --status)", file=sys.stderr)
        return EXIT_USAGE
    api_key = os.environ.get("OPENAI_API_KEY")
    if not api_key and not args.dry_run:
        print(
            "autobatcher run: set OPENAI_API_KEY (a key is never taken from the command line, "
            "where ps would show it)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        options = options_from_args(args, argv)
        if own_process:
            _tune_gc()
        summary = anyio.run(_run_with_signals, options, api_key, backend=args.backend)
    except RunRefused as exc:
        print(f"autobatcher run: {exc}", file=sys.stderr)
        return exc.exit_status
    except (OSError, AutobatcherError, ValueError) as exc:
        print(f"autobatcher run: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        # a second Ctrl-C during the shutdown: stopped at once, and still resumable (the
        # journal is written ahead of every step; the output is repaired by the next run)
        print(
            f"autobatcher run: stopped at once. To finish the job, run the same command: "
            f"{_resume_command(args, argv)}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return summary.exit_status


def _tune_gc() -> None:
    """This process is the command's own, and it allocates a few short-lived containers per
    request, millions of times: at the cyclic collector's default cadence (a young collection
    every 700 net allocations, full ones walking every object alive) the collector costs
    about a tenth of its CPU. Objects alive now (the imported modules) are moved out of its
    sight, and the young generation is collected every 50,000 allocations instead.

    Rarer collections would keep cyclic garbage longer; the job leaves none per request
    (``client.map()`` breaks its slot's cycle at hand-over), so reference counting frees each
    result as it is written. Measured (``benchmarks/README.md``, bulk section): 79-84 µs of
    CPU per request with this, 97-98 without, same peak RSS, at N = 200,000.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _resume_command(args: argparse.Namespace, argv: Sequence[str]) -> str:
    return "autobatcher " + shlex.join(argv)


async def _run_with_signals(options: RunOptions, api_key: str | None) -> RunSummary:
    """The job, stopped gracefully by the first SIGINT or SIGTERM (a second SIGINT, once the
    default handler is back, raises KeyboardInterrupt)."""
    stop = anyio.Event()
    summary: RunSummary | None = None

    async def watch_signals(task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for received in signals:
                print(
                    f"\nautobatcher run: {signal.Signals(received).name}: stopping (batches "
                    "already sent keep running upstream; Ctrl-C again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )
                stop.set()
                return

    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(watch_signals)
        try:
            summary = await run_job(options, api_key=api_key, stop=stop)
        except Exception as exc:  # raised as itself, not in an exception group
            error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error
    assert summary is not None
    return summary


# -- the job ----------------------------------------------------------------------------------


def _check_ownership(options: RunOptions, fingerprint: InputFingerprint) -> dict[str, Any] | None:
    """Refuse an output that belongs to another input (or was not written by us)."""
    state = read_state(options.state_path)
    output = options.output
    has_output = output.exists() and output.stat().st_size > 0
    if state is None:
        if has_output:
            raise RunRefused(
                f"{output} exists and was not written by autobatcher run (no "
                f"{options.state_path.name}): choose another -o, or delete it",
                EXIT_USAGE,
            )
        return None
    recorded = state.get("input", {})
    if recorded.get("sha256") != fingerprint.sha256 or recorded.get("size") != fingerprint.size:
        raise RunRefused(
            f"{output} belongs to another input ({recorded.get('path')}, "
            f"{recorded.get('lines')} lines, sha256 {str(recorded.get('sha256'))[:12]}…); "
            f"this one ({options.input}) differs. Choose another -o, or delete {output} and "
            f"its {options.state_path.name}, .journal and .errors files to start over",
            EXIT_USAGE,
        )
    if state.get("model") != options.model:
        raise RunRefused(
            f"{output} was started with --model {state.get('model')!r}, not "
            f"{options.model!r}: the requests would differ from those already sent",
            EXIT_USAGE,
        )
    return state


def _lock_output(path: Path) -> int:
    """One run per output at a time: an exclusive lock the kernel drops when we die."""
    import fcntl

    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 100).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunRefused(f"{path} is being written by another autobatcher run ({holder})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd


def _state(
    options: RunOptions, fingerprint: InputFingerprint, status: str, progress: Progress
) -> dict[str, Any]:
    return {
        "format": "autobatcher run state 1",
        "status": status,
        "pid": os.getpid(),
        "updated": time.time(),
        "command": options.command,
        "input": {
            "path": str(options.input.resolve()),
            "size": fingerprint.size,
            "sha256": fingerprint.sha256,
            "lines": fingerprint.lines,
        },
        "model": options.model,
        "journal": str(options.journal_path),
        "errors": str(options.errors_path),
        "progress": progress.snapshot(),
    }


#: result-line failures that say "try again later" (the client's own resubmission rule):
#: after its resubmissions ran out, the request is left for the next run, not written
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503})
_TRANSIENT_CODES = frozenset({"request_timeout", "batch_expired", "batch_cancelled"})


def _outcome_of(result: BulkResult) -> str:
    """Where a result goes: ``"answer"`` (the output: a success, or the server's verdict on
    this request), ``"rejected"`` (the errors file: the item itself cannot be sent), or
    ``"not_run"`` (the errors file: the request got no answer, its batch expired, was lost
    or cancelled, the server could not be reached, or it failed transiently; the next run
    sends it again)."""
    error = result.error
    if error is None:
        return "answer"
    if isinstance(error, InvalidBulkRequestError):
        return "rejected"
    if isinstance(
        error, (BatchExpiredError, BatchCancelledError, BatchLostError, MissingResultError)
    ):
        return "not_run"
    if isinstance(error, BatchFailedError):
        return "answer" if error.line_error is not None else "not_run"
    from_a_line = (
        result.line_id is not None
        or result.body is not None
        or isinstance(error, BatchRequestError)
    )
    if not from_a_line:  # a Files/Batches call failed, or the server was never reached
        return "not_run"
    if result.status_code in _TRANSIENT_STATUSES or error.code in _TRANSIENT_CODES:
        return "not_run"
    return "answer"


class _Feed:
    """The input as an async iterator of ``BulkRequest`` for ``client.map()``: chunks are read
    and checked in a worker thread; bad lines go to the errors list, done ones are skipped."""

    def __init__(self, reader: InputReader, job: _Job) -> None:
        self._reader = reader
        self._job = job
        self._chunk: list[BulkRequest] = []
        self._at = 0
        self._end = False

    def _read(self) -> tuple[InputChunk, list[BulkRequest]]:
        """The next chunk, as the items to hand over (in the worker thread)."""
        chunk = self._reader.read_chunk(_READ_CHUNK_LINES)
        # (the bodies' canonical JSON is made here, off the event loop, once: the map takes it)
        items = [encoded_request(r.custom_id, r.url, r.body) for r in chunk.requests]
        return chunk, items

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> BulkRequest:
        job = self._job
        while self._at >= len(self._chunk):
            if self._end or job.stop.is_set():
                if not job.stop.is_set():
                    job.progress.input_finished = True
                raise StopAsyncIteration
            chunk, items = await anyio.to_thread.run_sync(self._read)
            job.take_chunk(chunk)
            # map numbers its items in the order they are handed over, as these are
            job.lines.extend(request.line for request in chunk.requests)
            self._chunk, self._at, self._end = items, 0, chunk.end
        item = self._chunk[self._at]
        self._at += 1
        job.progress.submitted += 1
        return item


class _Job:
    """One run's mutable parts: counts, the buffered files, the stop flag."""

    def __init__(
        self, options: RunOptions, fingerprint: InputFingerprint, stop: anyio.Event
    ) -> None:
        self.options = options
        self.fingerprint = fingerprint
        self.stop = stop
        self.progress = Progress(total_lines=fingerprint.lines)
        #: the input line of each request handed to map, by its index
        self.lines = array("q")
        self.tokens_by_model: dict[str, list[int]] = {}
        self.client: Any = None
        self.results: BulkResults | None = None
        self.output: OutputWriter | None = None
        self.errors_file: IO[bytes] | None = None
        self._errors: list[bytes] = []
        self._write_lock = anyio.Lock()
        self._last_flush = 0.0

    def take_chunk(self, chunk: InputChunk) -> None:
        progress = self.progress
        progress.read += len(chunk.requests) + len(chunk.problems) + chunk.already_done
        progress.rejected += len(chunk.problems)
        for problem in chunk.problems:
            self._errors.append(_error_line("rejected", problem))

    def take_result(self, result: BulkResult) -> None:
        progress = self.progress
        progress.answered_in(result.batch_id)
        outcome = _outcome_of(result)
        if outcome != "answer":
            problem = InputProblem(self.lines[result.index], str(result.error), result.key)
            self._errors.append(_error_line(outcome, problem))
            if outcome == "rejected":
                progress.rejected += 1
            else:
                progress.not_run += 1
            return
        assert self.output is not None
        self.output.add(result.output_line_bytes() + b"\n")
        progress.done += 1
        if not result.ok:
            progress.failed += 1
        used = usage_of_body(result.body)
        if used is not None:
            model, prompt, completion = used
            progress.prompt_tokens += prompt
            progress.completion_tokens += completion
            per_model = self.tokens_by_model.setdefault(model, [0, 0])
            per_model[0] += prompt
            per_model[1] += completion

    def flush_due(self) -> bool:
        assert self.output is not None
        return (
            self.output.pending_bytes >= _FLUSH_BYTES
            or anyio.current_time() - self._last_flush >= _FLUSH_SECONDS
        )

    async def flush(self, *, sync: bool = False) -> None:
        """Hand the buffered lines to the kernel (in a worker thread); ``sync``: to the disk."""
        output, errors_file = self.output, self.errors_file
        assert output is not None
        assert errors_file is not None
        async with self._write_lock:
            self._last_flush = anyio.current_time()
            data = output.take()
            errors = b"".join(self._errors)
            self._errors.clear()

            def write() -> None:
                output.write(data)
                if errors:
                    errors_file.write(errors)
                    errors_file.flush()
                if sync:
                    output.sync()
                    os.fsync(errors_file.fileno())

            await anyio.to_thread.run_sync(write)


def _error_line(kind: str, problem: InputProblem) -> bytes:
    entry = {
        "line": problem.line,
        "custom_id": problem.custom_id,
        "kind": kind,
        "reason": problem.reason,
    }
    return json.dumps(entry).encode() + b"\n"


async def run_job(
    options: RunOptions,
    *,
    api_key: str | None,
    stop: anyio.Event | None = None,
    http_client: httpx.AsyncClient | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    on_result: Callable[[Progress], object] | None = None,
) -> RunSummary:
    """Run (or resume, or dry-run) the job; print the summary on ``out`` and the progress on
    ``err``. ``stop`` set: stop reading the input and leave, resumable (exit status 130).
    ``on_result`` is called with the counts after each answer is taken (a test's hook)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    stop = anyio.Event() if stop is None else stop
    try:
        fingerprint = await anyio.to_thread.run_sync(fingerprint_input, options.input)
    except OSError as exc:
        raise RunRefused(f"cannot read {options.input}: {exc.strerror or exc}") from None
    if options.dry_run:
        return await _dry_run(options, fingerprint, out)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_output(options.output)
    try:
        return await _run_locked(
            options, fingerprint, api_key, stop, http_client, out, err, on_result
        )
    finally:
        os.close(lock)


async def _run_locked(
    options: RunOptions,
    fingerprint: InputFingerprint,
    api_key: str | None,
    stop: anyio.Event,
    http_client: httpx.AsyncClient | None,
    out: TextIO,
    err: TextIO,
    on_result: Callable[[Progress], object] | None,
) -> RunSummary:
    _check_ownership(options, fingerprint)
    recovery = await anyio.to_thread.run_sync(recover_output, options.output)
    if recovery.torn_bytes:
        print(
            f"autobatcher run: cut a torn last line ({recovery.torn_bytes} bytes) off "
            f"{options.output}; its answer is written again",
            file=err,
        )
    if options.strict:
        problems = await anyio.to_thread.run_sync(_all_problems, options)
        if problems:
            listing = b"".join(_error_line("rejected", problem) for problem in problems)
            await anyio.to_thread.run_sync(options.errors_path.write_bytes, listing)
            for problem in problems[:10]:
                print(f"line {problem.line}: {problem.reason}", file=err)
            if len(problems) > 10:
                print(f"... and {len(problems) - 10} more", file=err)
            print(
                f"autobatcher run: --strict: {len(problems)} bad lines in {options.input} "
                f"(listed in {options.errors_path}); nothing was sent",
                file=err,
            )
            return RunSummary(
                "refused", EXIT_STRICT, input_lines=fingerprint.lines, rejected=len(problems)
            )

    from ._facade import BatchOpenAI

    job = _Job(options, fingerprint, stop)
    progress = job.progress
    progress.done_before = len(recovery.done)
    client_options: dict[str, Any] = {
        "api_key": api_key,
        "base_url": options.base_url,
        "http_client": http_client,
        "journal": options.journal_path,
        "batch_size": options.batch_size,
        "batch_window_seconds": options.window,
        "max_batch_lines": options.batch_size,
        "max_batches_in_flight": options.max_batches_in_flight,
    }
    if options.poll_interval is not None:
        client_options["poll_interval_seconds"] = options.poll_interval
    if options.completion_window is not None:
        client_options["completion_window"] = options.completion_window
    # client.map() reads at most this many requests ahead of the answers: whole batches (a
    # lane the bound left part-filled would wait for its window), as many as are allowed in
    # flight, or else at least the client's bound (100,000: two batches of 50,000)
    batches_ahead = options.max_batches_in_flight or max(2, -(-100_000 // options.batch_size))
    in_flight = options.batch_size * batches_ahead
    reader, output, errors_file = await anyio.to_thread.run_sync(
        _open_files, options, recovery.done
    )
    job.output, job.errors_file = output, errors_file
    interrupted = False
    ended = False  # the job reached its end (it did not stop on an error or a signal)
    #: an error of any task, raised as itself once the task groups are left (not in a group)
    failure: list[Exception] = []
    try:
        job.client = client = BatchOpenAI(**client_options)
        running = _state(options, fingerprint, "running", progress)
        await anyio.to_thread.run_sync(write_state, options.state_path, running)
        async with anyio.create_task_group() as watchers:
            with anyio.CancelScope() as work:

                async def guarded(task: Callable[[], Awaitable[object]]) -> None:
                    try:
                        await task()
                    except Exception as exc:
                        failure.append(exc)
                        work.cancel()

                async def stop_when_asked() -> None:
                    nonlocal interrupted
                    await stop.wait()
                    interrupted = True
                    work.cancel()

                async def take_results() -> None:
                    feed = _Feed(reader, job)
                    # (the reader refuses repeated custom_ids itself, with their line numbers)
                    bulk = BulkMap(
                        client, feed, ordered=False, max_in_flight=in_flight, keys_checked=True
                    )
                    async with bulk as results:
                        job.results = results
                        async for result in results:
                            job.take_result(result)
                            if on_result is not None:
                                on_result(progress)
                            if output.pending_bytes >= _FLUSH_BYTES:
                                await job.flush()

                async def use_client() -> None:
                    async with client, anyio.create_task_group() as tg:
                        tg.start_soon(stop_when_asked)
                        tg.start_soon(_watch_events, client, progress)
                        await guarded(take_results)
                        tg.cancel_scope.cancel()

                watchers.start_soon(guarded, lambda: _report(job, err))
                await guarded(use_client)
            with anyio.CancelScope(shield=True):
                await job.flush(sync=True)
            watchers.cancel_scope.cancel()
        if failure:
            raise failure[0]
        ended = not interrupted
    finally:
        reader.close()
        output.close()
        errors_file.close()
        if job.client is not None:
            final = "finished" if ended else "interrupted"
            write_state(options.state_path, _state(options, fingerprint, final, progress))
    return _summarise(options, fingerprint, job, recovery, interrupted, out, err)


def _open_files(options: RunOptions, done: set[str]) -> tuple[InputReader, OutputWriter, IO[bytes]]:
    """The input to read, the output to append to, the errors file to start again."""
    reader = InputReader(options.input, done=done, model_override=options.model)
    errors_file = open(options.errors_path, "wb")  # noqa: SIM115 -- closed by the job
    return reader, OutputWriter(options.output), errors_file


async def _watch_events(client: Any, progress: Progress) -> None:
    with client.events(max_buffer=10_000) as events:
        async for event in events:
            progress.on_event(event)


async def _report(job: _Job, err: TextIO) -> None:
    """The progress display and the state file, refreshed until cancelled."""
    options = job.options
    mode = options.progress
    if mode == "auto":
        mode = "live" if err.isatty() and _has_rich() else "log"
    if mode == "live" and not _has_rich():
        print(
            "autobatcher run: --progress live needs rich (pip install -e '.[cli]'); "
            "showing log lines",
            file=err,
        )
        mode = "log"
    next_state = anyio.current_time() + _STATE_SECONDS

    async def save_state() -> None:
        nonlocal next_state
        if anyio.current_time() >= next_state:
            next_state = anyio.current_time() + _STATE_SECONDS
            state = _state(options, job.fingerprint, "running", job.progress)
            await anyio.to_thread.run_sync(write_state, options.state_path, state)

    if mode == "live":
        with LiveDisplay(job.progress, err) as display:
            while True:
                await anyio.sleep(0.25)
                _count_waiting(job)
                display.refresh()
                await save_state()
                await _flush_if_due(job)
    interval = options.log_interval
    next_line = anyio.current_time() + interval
    try:
        while True:
            await anyio.sleep(min(_FLUSH_SECONDS, interval))
            await save_state()
            await _flush_if_due(job)
            if mode == "log" and anyio.current_time() >= next_line:
                next_line = anyio.current_time() + interval
                _count_waiting(job)
                print(f"autobatcher run: {render_line(job.progress)}", file=err, flush=True)
    finally:
        if mode == "log":  # the last word, however the run ends
            _count_waiting(job)
            print(f"autobatcher run: {render_line(job.progress)}", file=err, flush=True)


def _count_waiting(job: _Job) -> None:
    """How many requests wait in lanes (queued) and in flushed jobs not yet a batch upstream
    (uploading), from the map's progress; before the map is open, unknown."""
    progress = job.progress
    results = job.results
    if results is None:
        progress.queued = progress.uploading = None
        return
    now = results.progress()
    for batch in now.batches:
        # a batch an earlier run left upstream sends no event until its status changes
        progress.adopt_batch(batch.batch_id, batch.status or "in_progress", batch.requests)
    progress.queued = now.queued
    progress.uploading = now.uploading


async def _flush_if_due(job: _Job) -> None:
    """Answers that arrive slowly reach the kernel within a second, not at the next burst."""
    if job.output is not None and job.output.pending_bytes and job.flush_due():
        await job.flush()


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _all_problems(options: RunOptions) -> list[InputProblem]:
    reader = InputReader(options.input, model_override=options.model)
    problems: list[InputProblem] = []
    try:
        while True:
            chunk = reader.read_chunk(10_000)
            problems += chunk.problems
            if chunk.end:
                return problems
    finally:
        reader.close()


def _summarise(
    options: RunOptions,
    fingerprint: InputFingerprint,
    job: _Job,
    recovery: OutputRecovery,
    interrupted: bool,
    out: TextIO,
    err: TextIO,
) -> RunSummary:
    progress = job.progress
    tokens_by_model = {model: list(pair) for model, pair in recovery.tokens_by_model.items()}
    for model, (prompt, completion) in job.tokens_by_model.items():
        pair = tokens_by_model.setdefault(model, [0, 0])
        pair[0] += prompt
        pair[1] += completion
    summary = RunSummary(
        "interrupted" if interrupted else "finished",
        EXIT_OK,
        input_lines=fingerprint.lines,
        rejected=progress.rejected,
        sent=progress.submitted,
        answered=progress.done,
        failed=progress.failed,
        not_run=progress.not_run,
        done_before=progress.done_before,
        output_ok=recovery.ok + progress.done - progress.failed,
        output_failed=recovery.failed + progress.failed,
        batches=_batches_in_journal(options.journal_path),
        prompt_tokens=recovery.prompt_tokens + progress.prompt_tokens,
        completion_tokens=recovery.completion_tokens + progress.completion_tokens,
        tokens_by_model=tokens_by_model,
        elapsed=time.monotonic() - progress.started,
    )
    if options.prices is not None:
        summary.cost = options.prices.cost(tokens_by_model)
    if interrupted:
        summary.exit_status = EXIT_INTERRUPTED
    elif summary.output_failed or summary.not_run or summary.rejected:
        summary.exit_status = EXIT_FAILED
    _print_summary(options, summary, out)
    if interrupted:
        print(
            f"autobatcher run: interrupted; batches already sent keep running upstream. "
            f"To finish the job, run the same command again: {options.command or '(the same)'}",
            file=err,
        )
    return summary


def _batches_in_journal(path: Path) -> int:
    from ._journal import SqliteStore

    store = SqliteStore(path)
    try:
        store.open_readonly()
        return store.batch_count()
    except AutobatcherError:
        return 0
    finally:
        store.close()


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def _print_summary(options: RunOptions, summary: RunSummary, out: TextIO) -> None:
    if options.json:
        print(json.dumps(summary.to_json()), file=out)
        return
    head = "finished" if summary.status == "finished" else "interrupted"
    print(
        f"autobatcher run: {head} in {format_duration(summary.elapsed)}: {options.output}", file=out
    )
    print(f"  input      {format_count(summary.input_lines)} lines in {options.input}", file=out)
    if summary.rejected:
        print(
            f"  rejected   {format_count(summary.rejected)} bad lines (listed in "
            f"{options.errors_path})",
            file=out,
        )
    total_out = summary.output_ok + summary.output_failed
    earlier = (
        f" ({format_count(summary.done_before)} from earlier runs)" if summary.done_before else ""
    )
    print(
        f"  output     {format_count(total_out)} answers{earlier}: "
        f"{format_count(summary.output_ok)} ok, {format_count(summary.output_failed)} failed",
        file=out,
    )
    if summary.not_run:
        print(
            f"  not run    {format_count(summary.not_run)} requests got no answer (listed in "
            f"{options.errors_path}); run the same command again to send them",
            file=out,
        )
    print(f"  batches    {format_count(summary.batches)}", file=out)
    print(
        f"  tokens     {format_count(summary.prompt_tokens)} input + "
        f"{format_count(summary.completion_tokens)} output = "
        f"{format_count(summary.prompt_tokens + summary.completion_tokens)}",
        file=out,
    )
    if summary.cost is not None:
        spent_in, spent_out, unpriced = summary.cost
        line = (
            f"  cost       {_money(spent_in + spent_out)} estimated "
            f"({_money(spent_in)} input + {_money(spent_out)} output)"
        )
        if unpriced:
            line += f"; no price for {', '.join(unpriced)}"
        print(line, file=out)


# -- --dry-run --------------------------------------------------------------------------------


async def _dry_run(options: RunOptions, fingerprint: InputFingerprint, out: TextIO) -> RunSummary:
    state = _check_ownership(options, fingerprint)
    done: set[str] = set()
    if state is not None and options.output.exists():
        recovery = await anyio.to_thread.run_sync(_read_done, options.output)
        done = recovery
    figures = await anyio.to_thread.run_sync(_plan, options, done)
    figures["input_lines"] = fingerprint.lines
    if options.prices is not None:
        by_model = {model: (lane["input_tokens"], 0) for model, lane in _by_model(figures).items()}
        spent_in, _, unpriced = options.prices.cost(by_model)
        figures["estimated_input_cost"] = spent_in
        figures["unpriced_models"] = unpriced
    exit_status = EXIT_FAILED if figures["rejected"] else EXIT_OK
    if options.strict and figures["rejected"]:
        exit_status = EXIT_STRICT
    if options.json:
        print(json.dumps(figures), file=out)
    else:
        _print_plan(options, figures, out)
    return RunSummary(
        "dry-run",
        exit_status,
        input_lines=fingerprint.lines,
        rejected=figures["rejected"],
        done_before=figures["already_done"],
    )


def _read_done(path: Path) -> set[str]:
    done = set()
    with open(path, "rb") as file:
        for raw in file:
            try:
                done.add(decode_json(raw)["custom_id"])
            except (ValueError, KeyError, TypeError):
                break
    return done


def _plan(options: RunOptions, done: set[str]) -> dict[str, Any]:
    """What a run would send: per (endpoint, model) lane, requests, bytes, batches, tokens."""
    from ._config import BatcherConfig

    config = BatcherConfig(
        api_key="dry-run", base_url=options.base_url, max_batch_lines=options.batch_size
    )
    reader = InputReader(options.input, done=done, model_override=options.model)
    lanes: dict[tuple[str, str], dict[str, int]] = {}
    problems: list[InputProblem] = []
    already = 0
    try:
        while True:
            chunk = reader.read_chunk(10_000)
            problems += chunk.problems
            already += chunk.already_done
            for request in chunk.requests:
                model = str(request.body.get("model", ""))
                lane = lanes.setdefault(
                    (request.url, model),
                    {
                        "requests": 0,
                        "bytes": 0,
                        "input_tokens": 0,
                        "max_output_tokens": 0,
                        "without_output_limit": 0,
                    },
                )
                lane["requests"] += 1
                lane["bytes"] += request.size
                # the estimate OpenAI applies to enqueued tokens: about 4 bytes a token
                lane["input_tokens"] += max(1, request.size // 4)
                limit = _output_limit(request.body)
                if limit is None:
                    lane["without_output_limit"] += 1
                else:
                    lane["max_output_tokens"] += limit
            if chunk.end:
                break
    finally:
        reader.close()
    rows = []
    for (url, model), lane in sorted(lanes.items()):
        batches = max(
            math.ceil(lane["requests"] / options.batch_size),
            math.ceil(lane["bytes"] / config.max_batch_bytes),
        )
        rows.append({"url": url, "model": model, "batches": batches, **lane})
    return {
        "requests": sum(row["requests"] for row in rows),
        "bytes": sum(row["bytes"] for row in rows),
        "batches": sum(row["batches"] for row in rows),
        "input_tokens": sum(row["input_tokens"] for row in rows),
        "rejected": len(problems),
        "problems": [attrs.asdict(problem) for problem in problems[:100]],
        "already_done": already,
        "lanes": rows,
    }


def _by_model(figures: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in figures["lanes"]:
        entry = out.setdefault(row["model"], {"input_tokens": 0})
        entry["input_tokens"] += row["input_tokens"]
    return out


def _output_limit(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int):
            return value
    return None


def _print_plan(options: RunOptions, figures: Mapping[str, Any], out: TextIO) -> None:
    lines = format_count(figures["input_lines"])
    print(f"autobatcher run --dry-run: {options.input} ({lines} lines)", file=out)
    print(
        f"  would send {format_count(figures['requests'])} requests, "
        f"{format_count(figures['bytes'])} bytes, in {format_count(figures['batches'])} batches "
        f"of at most {format_count(options.batch_size)}",
        file=out,
    )
    if figures["already_done"]:
        print(
            f"  {format_count(figures['already_done'])} already answered in {options.output}",
            file=out,
        )
    for row in figures["lanes"]:
        limit = (
            f"at most {format_count(row['max_output_tokens'])} output tokens"
            if not row["without_output_limit"]
            else f"{format_count(row['without_output_limit'])} requests without an output limit"
        )
        print(
            f"  {row['url']} {row['model'] or '(no model)'}: {format_count(row['requests'])} "
            f"requests, {format_count(row['batches'])} batches, about "
            f"{format_count(row['input_tokens'])} input tokens, {limit}",
            file=out,
        )
    if "estimated_input_cost" in figures:
        line = f"  estimated input cost {_money(figures['estimated_input_cost'])}"
        if figures["unpriced_models"]:
            line += f" (no price for {', '.join(figures['unpriced_models'])})"
        print(line, file=out)
    if figures["rejected"]:
        print(f"  {format_count(figures['rejected'])} bad lines would not be sent:", file=out)
        for problem in figures["problems"][:20]:
            print(f"    line {problem['line']}: {problem['reason']}", file=out)
        if figures["rejected"] > 20:
            print(f"    ... and {format_count(figures['rejected'] - 20)} more", file=out)


# -- --status ---------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_status(output: Path) -> dict[str, Any]:
    """What ``--status`` shows: the state file's last word, whether its process still runs,
    the output's and errors file's line counts, and the journal's requests and batches."""
    state = read_state(state_path_of(output))
    if state is None:
        raise RunRefused(f"no job writes {output} (no {state_path_of(output).name})")
    status = state.get("status")
    if status == "running" and not _alive(int(state.get("pid", 0))):
        status = "interrupted"
    report: dict[str, Any] = {
        "status": status,
        "pid": state.get("pid") if status == "running" else None,
        "updated": state.get("updated"),
        "command": state.get("command"),
        "input": state.get("input"),
        "progress": state.get("progress"),
        "output_lines": _count_lines(output),
        "errors_lines": _count_lines(Path(state.get("errors", ""))),
    }
    journal_path = Path(state.get("journal", ""))
    if journal_path.exists():
        from ._job import Phase
        from ._journal import SqliteStore

        store = SqliteStore(journal_path)
        try:
            store.open_readonly()
            phases: dict[str, int] = {}
            for record, _total, _done in store.jobs():
                name = Phase(record.phase).name.lower()
                phases[name] = phases.get(name, 0) + 1
            report["journal"] = {**store.counts(), "batch_jobs_by_phase": phases}
        finally:
            store.close()
    return report


def _count_lines(path: Path) -> int:
    if not path.name or not path.exists():
        return 0
    count = 0
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
    return count


def print_status(output: Path, *, as_json: bool, out: TextIO) -> int:
    report = job_status(output)
    if as_json:
        print(json.dumps(report), file=out)
        return EXIT_OK
    status = report["status"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report["updated"] or 0))
    running = f" (pid {report['pid']})" if status == "running" else ""
    print(f"{output}: {status}{running}, last update {when}", file=out)
    source = report["input"] or {}
    print(
        f"  input    {source.get('path')} ({format_count(source.get('lines') or 0)} lines)",
        file=out,
    )
    print(f"  output   {format_count(report['output_lines'])} answers written", file=out)
    if report["errors_lines"]:
        print(f"  errors   {format_count(report['errors_lines'])} lines listed", file=out)
    progress = report["progress"] or {}
    if status == "running" and progress:
        print(f"  progress {_status_progress(progress)}", file=out)
    journal = report.get("journal")
    if journal:
        phases = ", ".join(f"{n} {p}" for p, n in sorted(journal["batch_jobs_by_phase"].items()))
        print(
            f"  journal  {format_count(journal['requests'])} requests sent, "
            f"{format_count(journal['answered'])} answered, {format_count(journal['waiting'])} "
            f"waiting; batch jobs: {phases or 'none'}",
            file=out,
        )
    if status == "interrupted":
        print(f"  to finish it: {report['command']}", file=out)
    return EXIT_OK


def _status_progress(progress: Mapping[str, Any]) -> str:
    in_batches = progress.get("in_batches") or {}
    parts = [
        f"read {format_count(progress.get('read', 0))}",
        f"sent {format_count(progress.get('submitted', 0))}",
    ]
    parts += [f"{status} {format_count(n)}" for status, n in sorted(in_batches.items())]
    parts.append(f"done {format_count(progress.get('done', 0) + progress.get('done_before', 0))}")
    return ", ".join(parts)
