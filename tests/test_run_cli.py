"""``autobatcher run``: a Batch API input file through client.map(), resumable.

The command's async core (:func:`autobatcher._run_cli.run_job`) runs in-process against the
in-process emulator on every backend; the kill -9 and Ctrl-C paths run the real command in a
child process against the emulator in a process of its own, and check with the emulator's own
counts that a re-run finished the job without executing anything twice.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from autobatcher._bulk_io import (
    InputReader,
    OutputWriter,
    fingerprint_input,
    recover_output,
)
from autobatcher._cli import main
from autobatcher._run_cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_USAGE,
    Prices,
    RunOptions,
    RunRefused,
    RunSummary,
    job_status,
    run_job,
)
from autobatcher._run_progress import Progress, render_line
from autobatcher.testing import IN_PROCESS_BASE_URL

from ._support import API_KEY, in_process

ROOT = Path(__file__).resolve().parent.parent


def request_line(
    custom_id: str, text: str, *, url: str = "/v1/chat/completions", **body: Any
) -> str:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": payload})


def write_input(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def good_lines(n: int, prefix: str = "") -> list[str]:
    return [request_line(f"req-{i}", f"{prefix}question {i}") for i in range(n)]


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_errors(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


MIXED = [
    request_line("a", "first"),
    "this is not json",
    json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}),
    request_line("a", "a repeated custom_id"),
    request_line("b", "second", url="/v1/images/generations"),
    "",  # a blank line is skipped, not reported
    json.dumps(["not", "an", "object"]),
    request_line("c", "third"),
    json.dumps({"custom_id": "d", "method": "GET", "url": "/v1/chat/completions", "body": {}}),
    json.dumps({"custom_id": "e", "url": "/v1/chat/completions", "body": {"messages": []}}),
    json.dumps(
        {
            "custom_id": "f",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": "fourth"},
        }
    ),
]


# -- reading and checking the input -------------------------------------------------------------


def test_every_bad_line_is_named_with_its_number_and_reason(tmp_path: Path) -> None:
    path = write_input(tmp_path / "in.jsonl", MIXED)
    reader = InputReader(path)
    chunk = reader.read_chunk(3)  # chunks of three lines: numbering carries over
    requests, problems = list(chunk.requests), list(chunk.problems)
    while not chunk.end:
        chunk = reader.read_chunk(3)
        requests += chunk.requests
        problems += chunk.problems
    reader.close()
    assert [(r.line, r.custom_id) for r in requests] == [(1, "a"), (8, "c"), (11, "f")]
    reasons = {p.line: p.reason for p in problems}
    assert reasons[2].startswith("not JSON")
    assert reasons[3] == "no custom_id (a non-empty string)"
    assert reasons[4] == "repeats a custom_id of an earlier line"
    assert reasons[5].startswith("unsupported url '/v1/images/generations'")
    assert reasons[7] == "not a JSON object (a list)"
    assert reasons[9] == "unsupported method 'GET' (only POST)"
    assert reasons[10] == "the body names no model (give --model)"
    assert sorted(reasons) == [2, 3, 4, 5, 7, 9, 10]


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"custom_id": "\xff"}\n')
    reader = InputReader(path)
    chunk = reader.read_chunk(10)
    reader.close()
    assert [(p.line, p.reason) for p in chunk.problems] == [(1, "not UTF-8 text")]


def test_a_model_override_replaces_every_body_model_and_done_lines_are_skipped(
    tmp_path: Path,
) -> None:
    path = write_input(tmp_path / "in.jsonl", [*good_lines(3), MIXED[9]])
    reader = InputReader(path, done={"req-1"}, model_override="other-model")
    chunk = reader.read_chunk(100)
    reader.close()
    assert chunk.end
    assert chunk.already_done == 1
    assert [(r.custom_id, r.body["model"]) for r in chunk.requests] == [
        ("req-0", "other-model"),
        ("req-2", "other-model"),
        ("e", "other-model"),
    ]


def test_the_fingerprint_counts_lines_with_or_without_a_final_newline(tmp_path: Path) -> None:
    with_newline = tmp_path / "a.jsonl"
    with_newline.write_bytes(b"x\ny\n")
    without = tmp_path / "b.jsonl"
    without.write_bytes(b"x\ny")
    assert fingerprint_input(with_newline).lines == 2
    assert fingerprint_input(without).lines == 2
    assert fingerprint_input(with_newline).sha256 != fingerprint_input(without).sha256


# -- the output after a crash -------------------------------------------------------------------


def output_line(
    custom_id: str, *, status: int = 200, prompt: int = 3, completion: int = 2
) -> bytes:
    body = {
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }
    line = {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": "r", "body": body},
        "error": None,
    }
    return json.dumps(line).encode() + b"\n"


def test_a_torn_last_line_is_cut_off_and_the_rest_counted(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    torn = output_line("c")[:25]
    path.write_bytes(output_line("a") + output_line("b", status=400) + torn)
    recovery = recover_output(path)
    assert recovery.done == {"a", "b"}
    assert (recovery.ok, recovery.failed) == (1, 1)
    assert (recovery.prompt_tokens, recovery.completion_tokens) == (6, 4)
    assert recovery.torn_bytes == len(torn)
    assert path.read_bytes() == output_line("a") + output_line("b", status=400)
    # appending after the cut gives whole lines again
    writer = OutputWriter(path)
    writer.add(output_line("c"))
    writer.write(writer.take())
    writer.close()
    assert recover_output(path).done == {"a", "b", "c"}


def test_a_bad_line_in_the_middle_of_an_output_is_not_mended(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(output_line("a") + b"garbage\n" + output_line("b"))
    with pytest.raises(OSError, match="is not an output line"):
        recover_output(path)
    assert path.read_bytes() == output_line("a") + b"garbage\n" + output_line("b")


# -- prices ---------------------------------------------------------------------------------------


def test_prices_take_the_longest_model_prefix_then_the_default(tmp_path: Path) -> None:
    file = tmp_path / "prices.json"
    file.write_text(
        json.dumps(
            {
                "gpt-4o": {"input": 1.25, "output": 5},
                "gpt-4o-mini": {"input": 0.075, "output": 0.3},
                "*": {"input": 9, "output": 9},
            }
        )
    )
    prices = Prices.load(str(file), None, None)
    assert prices is not None
    assert prices.of("gpt-4o-mini-2024-07-18") == (0.075, 0.3)
    assert prices.of("gpt-4o-2024-08-06") == (1.25, 5.0)
    assert prices.of("o3") == (9.0, 9.0)
    spent_in, spent_out, unpriced = prices.cost({"gpt-4o-mini": [2_000_000, 1_000_000]})
    assert (spent_in, spent_out) == pytest.approx((0.15, 0.3))
    assert unpriced == []
    flags_only = Prices.load(None, 0.5, None)
    assert flags_only is not None
    assert flags_only.cost({"x": [1_000_000, 1_000_000]}) == (0.5, 0.0, [])
    only_file = Prices.load(str(file), 1.0, None)  # the flag wins over the file's "*"
    assert only_file is not None
    assert only_file.of("o3") == (1.0, 9.0)
    assert Prices.load(None, None, None) is None
    file.write_text('{"m": {"input": "cheap"}}')
    with pytest.raises(RunRefused, match="'m' needs numbers"):
        Prices.load(str(file), None, None)


def test_a_model_without_a_price_is_named() -> None:
    prices = Prices(by_model={"gpt-4o-mini": (1.0, 1.0)})
    assert prices.cost({"gpt-4o-mini": [1, 1], "o3": [5, 5], "idle": [0, 0]})[2] == ["o3"]


# -- progress lines -------------------------------------------------------------------------------


def test_a_progress_line_says_where_every_request_stands() -> None:
    from autobatcher import BatchEvent

    progress = Progress(total_lines=1000, started=0.0)
    progress.read, progress.submitted, progress.done, progress.failed = 800, 700, 100, 2
    progress.prompt_tokens, progress.completion_tokens = 1200, 300
    progress.on_event(
        BatchEvent(kind="batch_submitted", batch_id="b1", status="validating", requests=300)
    )
    progress.on_event(
        BatchEvent(kind="batch_submitted", batch_id="b2", status="validating", requests=200)
    )
    progress.on_event(BatchEvent(kind="batch_progress", batch_id="b1", status="in_progress"))
    progress.on_event(BatchEvent(kind="batch_finalizing", batch_id="b2", status="finalizing"))
    line = render_line(progress, now=10.0)
    assert line.startswith("read 800/1,000 | queued 100 | uploading - | ")
    assert "in batches 300 (in_progress 300) | finalizing 200 | " in line
    assert "done 100 (failed 2)" in line
    assert "10/s" in line  # 100 answers in 10 s
    assert "ETA 1m30s" in line  # 900 to go at 10/s
    assert "tokens 1,500" in line
    progress.on_event(BatchEvent(kind="batch_progress", batch_id="b1", status="completed"))
    assert progress.in_batches() == {"downloading": 300, "finalizing": 200}
    progress.answered_in("b1")  # one answer read from b1's results
    progress.answered_in(None)
    assert progress.in_batches() == {"downloading": 299, "finalizing": 200}
    progress.on_event(BatchEvent(kind="batch_completed", batch_id="b2", status="completed"))
    assert progress.in_batches() == {"downloading": 299}
    assert len(progress.batch_ids) == 2


# -- --dry-run, --strict, refusals (nothing is sent) ---------------------------------------------


def options(tmp_path: Path, source: Path, **overrides: Any) -> RunOptions:
    values: dict[str, Any] = {
        "input": source,
        "output": tmp_path / "out.jsonl",
        "base_url": IN_PROCESS_BASE_URL,
        "window": 0.05,
        "poll_interval": 0.02,
        "progress": "none",
        "command": "autobatcher run (test)",
    }
    values.update(overrides)
    return RunOptions(**values)


@pytest.mark.anyio
async def test_dry_run_shows_requests_bytes_batches_and_an_estimate(tmp_path: Path) -> None:
    lines = [request_line(f"r{i}", "x" * 40, max_tokens=10) for i in range(5)]
    lines.append(request_line("e1", "embed me", url="/v1/embeddings"))
    source = write_input(tmp_path / "in.jsonl", [*lines, MIXED[1]])
    out = io.StringIO()
    prices = Prices(by_model={"gpt-4o-mini": (1_000_000.0, 0.0)})  # a dollar a token: visible
    summary = await run_job(
        options(tmp_path, source, dry_run=True, batch_size=2, prices=prices, json=True),
        api_key=None,
        out=out,
    )
    figures = json.loads(out.getvalue())
    assert summary.exit_status == EXIT_FAILED  # a bad line
    assert figures["requests"] == 6
    assert figures["rejected"] == 1
    assert figures["problems"][0]["line"] == 7
    chat = next(row for row in figures["lanes"] if row["url"] == "/v1/chat/completions")
    assert chat["requests"] == 5
    assert chat["batches"] == 3  # five requests, two a batch
    assert chat["bytes"] == sum(len(line) + 1 for line in lines[:5])
    assert chat["input_tokens"] == sum((len(line) + 1) // 4 for line in lines[:5])
    assert chat["max_output_tokens"] == 50
    assert figures["batches"] == 4
    assert figures["estimated_input_cost"] == pytest.approx(figures["input_tokens"] * 1.0, rel=1e-9)
    assert not (tmp_path / "out.jsonl").exists()  # nothing written, nothing sent

    text = io.StringIO()
    await run_job(options(tmp_path, source, dry_run=True, batch_size=2), api_key=None, out=text)
    shown = text.getvalue()
    assert "would send 6 requests" in shown
    assert "in 4 batches of at most 2" in shown
    assert "line 7: not JSON" in shown


@pytest.mark.anyio
async def test_strict_refuses_a_file_with_any_bad_line_and_sends_nothing(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", MIXED)
    err = io.StringIO()
    async with in_process() as server:
        summary = await run_job(
            options(tmp_path, source, strict=True),
            api_key=API_KEY,
            http_client=server.http_client,
            err=err,
        )
        assert server.emulator.stats().api_calls == 0
    assert summary.exit_status == EXIT_STRICT
    assert summary.rejected == 7
    listed = read_errors(tmp_path / "out.jsonl.errors")
    assert [entry["line"] for entry in listed] == [2, 3, 4, 5, 7, 9, 10]
    assert all(entry["kind"] == "rejected" for entry in listed)
    assert "--strict: 7 bad lines" in err.getvalue()
    assert "line 2: not JSON" in err.getvalue()


@pytest.mark.anyio
async def test_an_output_of_another_input_or_of_someone_else_is_refused(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(2))
    stranger = tmp_path / "out.jsonl"
    stranger.write_text("precious data\n")
    with pytest.raises(RunRefused, match="not written by autobatcher run") as refused:
        await run_job(options(tmp_path, source, dry_run=True), api_key=None)
    assert refused.value.exit_status == EXIT_USAGE
    assert stranger.read_text() == "precious data\n"


# -- the real command in a child process: kill -9 and Ctrl-C, then the same command again --------

CHILD_KEY = "sk-run-child"
CHILD_REQUESTS = 40


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """One emulator process for the child tests (each asks its own questions). Slow enough
    (10 lines a second) that a job of four batches of ten, one at a time, takes seconds."""
    args = [sys.executable, "-m", "autobatcher", "emulate", "--port", "0"]
    args += ["--api-key", CHILD_KEY, "--lines-per-second", "10"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().split("serving at ", 1)[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def emulator_stats(base_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{base_url.removesuffix('/v1')}/_emulator/stats").json()
    return stats


def run_args(base_url: str, source: Path, output: Path, backend: str) -> list[str]:
    return [
        "run",
        str(source),
        "-o",
        str(output),
        "--base-url",
        base_url,
        "--batch-size",
        "10",
        "--max-batches-in-flight",
        "1",
        "--window",
        "0.05",
        "--poll-interval",
        "0.05",
        "--progress",
        "log",
        "--log-interval",
        "0.05",
        "--backend",
        backend,
    ]


def start_child(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENAI_API_KEY": CHILD_KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "autobatcher", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_until_part_done(child: subprocess.Popen[str]) -> list[str]:
    """Read the child's progress lines until some answers are written and some are not."""
    assert child.stderr is not None
    seen = []
    for line in child.stderr:
        seen.append(line)
        if " | done " in line:
            done = int(line.split(" | done ", 1)[1].split()[0].replace(",", ""))
            if 0 < done < CHILD_REQUESTS:
                return seen
    raise AssertionError("the child ended before it was part done:\n" + "".join(seen))


def finish(args: list[str]) -> tuple[int, str, str]:
    child = start_child(args)
    out, err = child.communicate(timeout=120)
    return child.returncode, out, err


def check_complete(output: Path, tag: str, base_url: str, before: dict[str, Any]) -> None:
    lines = read_output(output)
    assert sorted(line["custom_id"] for line in lines) == sorted(
        f"req-{i}" for i in range(CHILD_REQUESTS)
    )  # every request, each once
    for line in lines:
        index = line["custom_id"].removeprefix("req-")
        reply = line["response"]["body"]["choices"][0]["message"]["content"]
        assert reply == f"{tag}question {index}"
    after = emulator_stats(base_url)
    mine = [count for body, count in after["executions"].items() if tag in body]
    assert sorted(mine) == [1] * CHILD_REQUESTS  # and none ran twice
    assert after["batches_created"] - before["batches_created"] <= CHILD_REQUESTS // 10


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_kill_9_mid_run_then_the_same_command_finishes_the_job(
    backend: str, emulator_url: str, tmp_path: Path
) -> None:
    tag = f"kill-{backend}-{tmp_path.name}: "
    source = write_input(tmp_path / "in.jsonl", good_lines(CHILD_REQUESTS, tag))
    output = tmp_path / "out.jsonl"
    args = run_args(emulator_url, source, output, backend)
    before = emulator_stats(emulator_url)
    child = start_child(args)
    try:
        wait_until_part_done(child)
        child.send_signal(signal.SIGKILL)  # no clean-up of any kind runs
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert 0 < len(output.read_bytes().splitlines()) < CHILD_REQUESTS
    assert job_status(output)["status"] == "interrupted"  # its process is gone

    status, out, err = finish(args)
    assert status == EXIT_OK, err
    assert "finished" in out
    check_complete(output, tag, emulator_url, before)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_stops_says_how_to_resume_and_the_same_command_finishes(
    backend: str, emulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = f"sigint-{backend}-{tmp_path.name}: "
    source = write_input(tmp_path / "in.jsonl", good_lines(CHILD_REQUESTS, tag))
    output = tmp_path / "out.jsonl"
    args = run_args(emulator_url, source, output, backend)
    before = emulator_stats(emulator_url)
    child = start_child(args)
    try:
        wait_until_part_done(child)
        running = job_status(output)
        assert (running["status"], running["pid"]) == ("running", child.pid)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in out
    assert "run the same command again: autobatcher run " in err
    written = read_output(output)
    assert 0 < len(written) < CHILD_REQUESTS
    assert len({line["custom_id"] for line in written}) == len(written)

    assert main(["run", "--status", "-o", str(output)]) == EXIT_OK
    shown = capsys.readouterr().out
    assert f"{output}: interrupted" in shown
    assert f"{len(written)} answers written" in shown
    assert "to finish it: autobatcher run " in shown

    status, out, err = finish(args)
    assert status == EXIT_OK, err
    check_complete(output, tag, emulator_url, before)


# -- the job, in-process ------------------------------------------------------------------------


async def run_in_process(
    server: Any, opts: RunOptions, **kwargs: Any
) -> tuple[RunSummary, str, str]:
    out, err = io.StringIO(), io.StringIO()
    summary = await run_job(
        opts, api_key=API_KEY, http_client=server.http_client, out=out, err=err, **kwargs
    )
    return summary, out.getvalue(), err.getvalue()


@pytest.mark.anyio
async def test_a_good_file_is_answered_line_for_line_in_the_output_format(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(30))
    prices = Prices(default_input=2.0, default_output=8.0)
    async with in_process() as server:
        summary, out, _ = await run_in_process(
            server, options(tmp_path, source, batch_size=10, prices=prices)
        )
        stats = server.emulator.stats()
    assert summary.exit_status == EXIT_OK
    lines = read_output(tmp_path / "out.jsonl")
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(30))
    for line in lines:
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["error"] is None
        assert line["id"].startswith("batch_req_")
        response = line["response"]
        assert response["status_code"] == 200
        assert response["request_id"]
        index = line["custom_id"].removeprefix("req-")
        assert response["body"]["choices"][0]["message"]["content"] == f"question {index}"
    prompt = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in lines)
    completion = sum(line["response"]["body"]["usage"]["completion_tokens"] for line in lines)
    assert prompt > 0
    assert (summary.prompt_tokens, summary.completion_tokens) == (prompt, completion)
    assert summary.batches == stats.batches_created == 3
    assert (summary.output_ok, summary.output_failed, summary.rejected) == (30, 0, 0)
    assert summary.cost is not None
    assert summary.cost[:2] == pytest.approx((prompt * 2.0 / 1e6, completion * 8.0 / 1e6))
    assert "output     30 answers: 30 ok, 0 failed" in out
    assert "batches    3" in out
    assert f"tokens     {prompt:,} input + {completion:,} output" in out
    assert "cost       $" in out
    assert not read_errors(tmp_path / "out.jsonl.errors")
    status = job_status(tmp_path / "out.jsonl")
    assert status["status"] == "finished"
    assert status["output_lines"] == 30
    assert status["journal"]["answered"] == 30


@pytest.mark.anyio
async def test_a_mixed_file_sends_the_good_lines_and_lists_the_bad(tmp_path: Path) -> None:
    failing = request_line("g", "[[status:400]] refused upstream")
    source = write_input(tmp_path / "in.jsonl", [*MIXED, failing])
    async with in_process() as server:
        summary, out, _ = await run_in_process(server, options(tmp_path, source, json=True))
    assert summary.exit_status == EXIT_FAILED
    lines = {line["custom_id"]: line for line in read_output(tmp_path / "out.jsonl")}
    assert sorted(lines) == ["a", "c", "f", "g"]
    assert lines["f"]["response"]["body"]["object"] == "list"  # the embedding
    assert lines["g"]["response"]["status_code"] == 400
    listed = read_errors(tmp_path / "out.jsonl.errors")
    assert [(entry["line"], entry["kind"]) for entry in listed] == [
        (line, "rejected") for line in (2, 3, 4, 5, 7, 9, 10)
    ]
    assert listed[2]["custom_id"] == "a"
    assert listed[2]["reason"] == "repeats a custom_id of an earlier line"
    figures = json.loads(out)
    assert figures["rejected"] == 7
    assert (figures["output_ok"], figures["output_failed"]) == (3, 1)
    assert figures["input_lines"] == len(MIXED) + 1


@pytest.mark.anyio
async def test_stopped_mid_run_then_run_again_finishes_without_paying_twice(
    tmp_path: Path,
) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(30))
    opts = options(tmp_path, source, batch_size=10, max_batches_in_flight=1)
    stop = anyio.Event()

    def stop_after_ten(progress: Progress) -> None:
        if progress.done >= 10:
            stop.set()

    async with in_process() as server:
        first, _, err = await run_in_process(server, opts, stop=stop, on_result=stop_after_ten)
        assert first.exit_status == EXIT_INTERRUPTED
        assert "run the same command again: autobatcher run (test)" in err
        written = read_output(tmp_path / "out.jsonl")
        assert 10 <= len(written) < 30
        assert job_status(tmp_path / "out.jsonl")["status"] == "interrupted"

        second, _, _ = await run_in_process(server, opts)
        stats = server.emulator.stats()
    assert second.exit_status == EXIT_OK
    assert second.done_before == len(written)
    lines = read_output(tmp_path / "out.jsonl")
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(30))
    assert stats.total_executions == 30
    assert stats.duplicate_executions == 0
    assert second.output_ok == 30
    assert second.prompt_tokens == sum(
        line["response"]["body"]["usage"]["prompt_tokens"] for line in lines
    )


@pytest.mark.anyio
async def test_requests_that_did_not_run_are_listed_and_sent_again_by_the_next_run(
    tmp_path: Path,
) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(4))
    opts = options(tmp_path, source)
    async with in_process(expire_after_seconds=0.0) as server:
        first, out, _ = await run_in_process(server, opts)
        assert first.exit_status == EXIT_FAILED
        assert first.not_run == 4
        assert not read_output(tmp_path / "out.jsonl")  # no answer: nothing to keep
        listed = read_errors(tmp_path / "out.jsonl.errors")
        assert sorted(entry["custom_id"] for entry in listed) == [f"req-{i}" for i in range(4)]
        assert {entry["kind"] for entry in listed} == {"not_run"}
        assert {entry["line"] for entry in listed} == {1, 2, 3, 4}
        assert "run the same command again to send them" in out

        server.emulator.configure(expire_after_seconds=None)
        second, _, _ = await run_in_process(server, opts)
    assert second.exit_status == EXIT_OK
    assert len(read_output(tmp_path / "out.jsonl")) == 4
    assert not read_errors(tmp_path / "out.jsonl.errors")


@pytest.mark.anyio
async def test_progress_is_logged_in_plain_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(20))
    async with in_process() as server:
        summary, _, err = await run_in_process(
            server, options(tmp_path, source, progress="auto", log_interval=0.01)
        )
    assert summary.exit_status == EXIT_OK
    logged = [line for line in err.splitlines() if line.startswith("autobatcher run: read ")]
    assert logged  # at least the last word
    assert (
        "read 20/20 | queued 0 | uploading 0 | in batches 0 | finalizing 0 | done 20"
        in (logged[-1])
    )
    assert "\x1b[" not in err  # no terminal control codes in a log


@pytest.mark.anyio
async def test_the_live_display_shows_every_stage(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(5))
    async with in_process() as server:
        summary, _, err = await run_in_process(server, options(tmp_path, source, progress="live"))
    assert summary.exit_status == EXIT_OK
    for label in ("read", "queued", "uploading", "in batches", "finalizing", "done", "rate"):
        assert label in err
    assert "tokens" in err


@pytest.mark.anyio
async def test_a_changed_input_or_model_is_refused_for_the_same_output(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(3))
    async with in_process() as server:
        await run_in_process(server, options(tmp_path, source))
        write_input(source, good_lines(4))
        with pytest.raises(RunRefused, match="belongs to another input") as refused:
            await run_in_process(server, options(tmp_path, source))
        assert refused.value.exit_status == EXIT_USAGE
        write_input(source, good_lines(3))
        with pytest.raises(RunRefused, match="was started with --model None"):
            await run_in_process(server, options(tmp_path, source, model="other"))
        again, _, _ = await run_in_process(server, options(tmp_path, source))
        assert again.exit_status == EXIT_OK
        assert again.done_before == 3
        assert server.emulator.stats().batches_created == 1


# -- the command line itself ----------------------------------------------------------------------


def test_the_command_line_says_what_is_missing_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(2))
    output = str(tmp_path / "out.jsonl")
    assert main(["run", "-o", output]) == EXIT_USAGE
    assert "INPUT is required" in capsys.readouterr().err
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["run", str(source), "-o", output]) == 1
    err = capsys.readouterr().err
    assert "set OPENAI_API_KEY" in err
    assert err.count("\n") == 1
    assert main(["run", str(tmp_path / "missing.jsonl"), "-o", output, "--dry-run"]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["run", "--status", "-o", output]) == 1
    assert "no job writes" in capsys.readouterr().err
    # a dry run needs no key, and says it in JSON when asked
    assert main(["run", str(source), "-o", output, "--dry-run", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["requests"] == 2
    bad_prices = tmp_path / "prices.json"
    bad_prices.write_text("[1, 2]")
    assert main(["run", str(source), "-o", output, "--dry-run", "--prices", str(bad_prices)]) == 2
    assert "expected a JSON object" in capsys.readouterr().err


@pytest.mark.anyio
async def test_an_error_mid_run_comes_out_as_itself_and_the_job_stays_resumable(
    tmp_path: Path,
) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(20))
    opts = options(tmp_path, source, batch_size=10, max_batches_in_flight=1)

    def fail_after_five(progress: Progress) -> None:
        if progress.done == 5:
            raise OSError("the disk is full")

    async with in_process() as server:
        with pytest.raises(OSError, match="the disk is full"):
            await run_in_process(server, opts, on_result=fail_after_five)
        assert job_status(tmp_path / "out.jsonl")["status"] == "interrupted"
        again, _, _ = await run_in_process(server, opts)
        stats = server.emulator.stats()
    assert again.exit_status == EXIT_OK
    assert len(read_output(tmp_path / "out.jsonl")) == 20
    assert stats.duplicate_executions == 0


@pytest.mark.anyio
async def test_a_dry_run_of_a_started_job_counts_what_is_done(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", good_lines(6))
    async with in_process() as server:
        await run_in_process(server, options(tmp_path, source, batch_size=3))
    out = io.StringIO()
    summary = await run_job(options(tmp_path, source, dry_run=True), api_key=None, out=out)
    assert summary.exit_status == EXIT_OK
    assert summary.done_before == 6
    assert "would send 0 requests" in out.getvalue()
    assert "6 already answered" in out.getvalue()
    status = io.StringIO()
    from autobatcher._run_cli import print_status

    assert print_status(tmp_path / "out.jsonl", as_json=False, out=status) == EXIT_OK
    shown = status.getvalue()
    assert "out.jsonl: finished" in shown
    assert "6 answers written" in shown
    assert "journal  6 requests sent, 6 answered, 0 waiting; batch jobs: 2 done" in shown
