"""Files of ``autobatcher run``: the input read and checked line by line, the output appended
and recovered after a crash, the errors file, and the job's state file.

Nothing here holds a whole file in memory: the input is read in chunks (in a worker thread,
by the caller), the output is appended through a small buffer, and resuming keeps only the
set of ``custom_id``s already written.

What each file records, so that a re-run finishes the job without paying twice and without
duplicating a line:

* the **output** is the record of what is done: a line is there once its answer is; a re-run
  reads the ``custom_id``s back and skips those requests (a torn last line, from a kill in
  the middle of a write, is cut off first);
* the **journal** (``autobatcher.SqliteStore``, written by the client) is the record of what
  was submitted and paid for: an answer is committed there before it can reach the output,
  so an answer a kill kept out of the output is recalled from the journal by the re-run;
* the **state file** (``OUTPUT.run.json``) says which input the output belongs to (its
  fingerprint: size and SHA-256) and, while it runs, how far the job got (for ``--status``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from ._jsonl import decode_json

__all__ = [
    "SUPPORTED_URLS",
    "InputChunk",
    "InputFingerprint",
    "InputProblem",
    "InputReader",
    "OutputRecovery",
    "OutputWriter",
    "ParsedRequest",
    "fingerprint_input",
    "read_state",
    "recover_output",
    "usage_of",
    "usage_of_body",
    "write_state",
]

#: The endpoints a batch line may name (the client's five; the Batch API's own list).
SUPPORTED_URLS = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/completions",
    "/v1/moderations",
)
_SUPPORTED = frozenset(SUPPORTED_URLS)
#: endpoints whose body must name a model (moderations pick a default)
_MODEL_OPTIONAL = frozenset({"/v1/moderations"})
_READ_BLOCK = 1 << 20


@attrs.frozen
class InputProblem:
    """One input line that is not sent: where it is and why."""

    line: int
    reason: str
    custom_id: str | None = None

    def to_json(self) -> str:
        return json.dumps({"line": self.line, "custom_id": self.custom_id, "reason": self.reason})


@attrs.frozen
class ParsedRequest:
    """A valid input line, ready to be handed to ``client.map()``."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any]
    size: int  # bytes of the input line, for --dry-run's figures


@attrs.frozen
class InputChunk:
    requests: list[ParsedRequest]
    problems: list[InputProblem]
    #: lines whose custom_id the output already holds (done by an earlier run)
    already_done: int
    end: bool


@attrs.frozen
class InputFingerprint:
    """Which input an output belongs to: its size, SHA-256 and how many lines it has."""

    size: int
    sha256: str
    lines: int


def fingerprint_input(path: str | os.PathLike[str]) -> InputFingerprint:
    """One streamed pass over the input (blocking: call it before the loop or in a thread)."""
    digest = hashlib.sha256()
    size = lines = 0
    last = b"\n"
    with open(path, "rb") as file:
        while block := file.read(_READ_BLOCK):
            digest.update(block)
            size += len(block)
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1  # a last line without its newline is still a line
    return InputFingerprint(size=size, sha256=digest.hexdigest(), lines=lines)


class InputReader:
    """The input in the Batch API's input format, read and checked a chunk at a time.

    Blocking (file reads, JSON parsing): call :meth:`read_chunk` in a worker thread. A line
    is refused, with its number and the reason, when it is not JSON, is not an object, has
    no string ``custom_id``, repeats one seen before, names a ``method`` other than POST or
    a ``url`` that is not a batchable endpoint, or has no object ``body`` (or one without a
    ``model``, unless the endpoint needs none or ``model_override`` is given). Blank lines
    are skipped. Lines whose ``custom_id`` is in ``done`` are counted and skipped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        done: Iterable[str] = (),
        model_override: str | None = None,
    ) -> None:
        self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 -- closed by close()
        self._done = done if isinstance(done, (set, frozenset)) else set(done)
        self._seen: set[str] = set()
        self._model = model_override
        self._line = 0
        self.closed = False

    def close(self) -> None:
        self._file.close()
        self.closed = True

    def read_chunk(self, max_lines: int = 2000) -> InputChunk:
        requests: list[ParsedRequest] = []
        problems: list[InputProblem] = []
        done = 0
        readline = self._file.readline
        for _ in range(max_lines):
            raw = readline()
            if not raw:
                return InputChunk(requests, problems, done, end=True)
            self._line += 1
            if not raw.strip():
                continue
            parsed = self._check(raw)
            if isinstance(parsed, InputProblem):
                problems.append(parsed)
            elif parsed is None:
                done += 1
            else:
                requests.append(parsed)
        return InputChunk(requests, problems, done, end=False)

    def _check(self, raw: bytes) -> ParsedRequest | InputProblem | None:
        line = self._line
        try:
            item = decode_json(raw, raw.decode())
        except UnicodeDecodeError:
            return InputProblem(line, "not UTF-8 text")
        except ValueError as exc:
            return InputProblem(line, f"not JSON ({exc})")
        if not isinstance(item, dict):
            return InputProblem(line, f"not a JSON object (a {type(item).__name__})")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return InputProblem(line, "no custom_id (a non-empty string)")
        if custom_id in self._seen:
            return InputProblem(line, "repeats a custom_id of an earlier line", custom_id)
        self._seen.add(custom_id)
        url = item.get("url")
        if url not in _SUPPORTED:
            return InputProblem(
                line,
                f"unsupported url {url!r} (one of: {', '.join(SUPPORTED_URLS)})",
                custom_id,
            )
        method = item.get("method", "POST")
        if method != "POST":
            return InputProblem(line, f"unsupported method {method!r} (only POST)", custom_id)
        body = item.get("body")
        if not isinstance(body, dict):
            return InputProblem(line, "no body (a JSON object)", custom_id)
        if self._model is not None:
            body["model"] = self._model
        elif url not in _MODEL_OPTIONAL and not isinstance(body.get("model"), str):
            return InputProblem(line, "the body names no model (give --model)", custom_id)
        if custom_id in self._done:
            return None
        return ParsedRequest(line, custom_id, url, body, len(raw))


@attrs.define
class OutputRecovery:
    """What an existing output holds: the custom_ids done, and its figures so far."""

    done: set[str] = attrs.field(factory=set)
    ok: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: bytes cut off the end: a line torn by a kill in the middle of a write
    torn_bytes: int = 0
    tokens_by_model: dict[str, list[int]] = attrs.field(factory=dict)

    def count(self, line: Mapping[str, Any]) -> None:
        """Count one output line (its outcome and its tokens)."""
        response = line.get("response")
        status = response.get("status_code") if isinstance(response, dict) else None
        if line.get("error") is None and status == 200:
            self.ok += 1
        else:
            self.failed += 1
        used = usage_of(line)
        if used is not None:
            model, prompt, completion = used
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            per_model = self.tokens_by_model.setdefault(model, [0, 0])
            per_model[0] += prompt
            per_model[1] += completion


def usage_of(line: Mapping[str, Any]) -> tuple[str, int, int] | None:
    """(model, prompt tokens, completion tokens) of an output line, if it reports usage."""
    response = line.get("response")
    return usage_of_body(response.get("body") if isinstance(response, dict) else None)


def usage_of_body(body: object) -> tuple[str, int, int] | None:
    """(model, prompt tokens, completion tokens) of a response body, if it reports usage
    (``prompt_tokens``/``completion_tokens``, or the Responses API's ``input_tokens``/
    ``output_tokens``)."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens")) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
    model = body.get("model")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return (model if isinstance(model, str) else "", prompt, completion)


def recover_output(path: Path) -> OutputRecovery:
    """Read an existing output back (blocking: run it in a worker thread).

    Every complete line's ``custom_id`` is done. A last line without its newline, or that is
    not JSON, was torn by a kill in the middle of a write: it is cut off (its answer is still
    in the journal, and the re-run writes it again).
    """
    recovery = OutputRecovery()
    if not path.exists():
        return recovery
    good_end = 0
    with open(path, "rb+") as file:
        while raw := file.readline():
            try:
                line = decode_json(raw) if raw.endswith(b"\n") else None
            except ValueError:
                line = None
            if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                # only the last line may be torn; one in the middle is not ours to mend
                if file.read(1):
                    raise OSError(
                        f"{path}: the line at byte {good_end} is not an output line "
                        "(is this the output of autobatcher run?)"
                    )
                break
            recovery.done.add(line["custom_id"])
            recovery.count(line)
            good_end += len(raw)
        size = file.seek(0, os.SEEK_END)
        if size > good_end:
            recovery.torn_bytes = size - good_end
            file.truncate(good_end)
    return recovery


class OutputWriter:
    """Appends output lines through a buffer; :meth:`flush` hands it to the kernel.

    A kill -9 loses at most what the buffer held: answers the journal already holds, written
    again by the re-run. Blocking writes: call :meth:`flush` in a worker thread.
    """

    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 -- closed by close()
        self._pending: list[bytes] = []
        self.pending_bytes = 0

    def add(self, line: bytes) -> None:
        self._pending.append(line)
        self.pending_bytes += len(line)

    def take(self) -> bytes:
        """The buffered lines, handed over for a write (the buffer starts again)."""
        data = b"".join(self._pending)
        self._pending.clear()
        self.pending_bytes = 0
        return data

    def write(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self._file.flush()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Replace the state file atomically (a reader never sees half of it)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(temporary, path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise OSError(f"{path} is not a state file of autobatcher run ({exc})") from None
    if not isinstance(state, dict):
        raise OSError(f"{path} is not a state file of autobatcher run")
    return state
