"""``autobatcher run`` measured as a user runs it (``bulk.py --mode run`` and ``--mode resume``).

The command runs in a child process (``python -m autobatcher run``, so its process-level
settings apply) against the emulator in another process on loopback; its CPU (user + sys)
and peak RSS come from ``wait4``'s resource usage of that child, so they cover everything the
command does: start-up, fingerprinting, reading and checking the input, the batches, the
journal, writing the output.

``run``: N chat requests in batches of ``--batch-size``: a row of ``bulk.py``'s table (wall
time, throughput, client CPU per request, peak RSS), the output checked line by line (every
request once, each with its own echo).

``resume``: N requests; the command is killed with SIGKILL once a third of the output is
written, then the same command is run again: the output must hold every request exactly once,
and the emulator must have executed each request exactly once (its admin counts).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _harness import OUR_PYTHON, emulator_process, our_env, table

API_KEY = "sk-bulk-bench"
MODEL = "bench-model"


def write_requests(path: Path, n: int) -> int:
    """N chat requests in the Batch API's input format; returns the file's size."""
    with open(path, "w") as file:
        for start in range(0, n, 10_000):
            file.write(
                "".join(
                    f'{{"custom_id":"r{i}","method":"POST","url":"/v1/chat/completions",'
                    f'"body":{{"model":"{MODEL}","messages":[{{"role":"user","content":'
                    f'"request number {i} of the bulk benchmark"}}]}}}}\n'
                    for i in range(start, min(n, start + 10_000))
                )
            )
    return path.stat().st_size


def run_command(
    base_url: str,
    source: Path,
    output: Path,
    *,
    batch_size: int,
    window: float,
    poll: float,
    backend: str,
    kill_after_lines: int | None = None,
) -> dict[str, Any]:
    """``autobatcher run`` in a child; its wall time, CPU and peak RSS (``wait4``).

    With ``kill_after_lines``, the child is SIGKILLed once the output holds that many lines
    (checked every 50 ms, so a few more may be written by then)."""
    args = [
        OUR_PYTHON,
        "-m",
        "autobatcher",
        "run",
        str(source),
        "-o",
        str(output),
        "--base-url",
        base_url,
        "--batch-size",
        str(batch_size),
        "--window",
        str(window),
        "--poll-interval",
        str(poll),
        "--backend",
        backend,
        "--progress",
        "log",
        "--log-interval",
        "15",
        "--json",
    ]
    env = {**our_env(), "OPENAI_API_KEY": API_KEY}
    started = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=sys.stderr, env=env)
    killed = False
    if kill_after_lines is not None:
        while child.poll() is None:
            if output.exists() and _count_lines(output) >= kill_after_lines:
                child.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
    assert child.stdout is not None
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    summary = json.loads(stdout.splitlines()[-1]) if stdout.strip() and not killed else None
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_kb": usage.ru_maxrss,
        "exit_status": child.returncode,
        "killed": killed,
        "summary": summary,
    }


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
    return count


def check_output(path: Path, n: int) -> dict[str, Any]:
    """Every request answered exactly once, each with its own echo."""
    seen: set[str] = set()
    lines = duplicates = wrong = 0
    with open(path, "rb") as file:
        for raw in file:
            lines += 1
            line = json.loads(raw)
            custom_id = line["custom_id"]
            if custom_id in seen:
                duplicates += 1
            seen.add(custom_id)
            content = line["response"]["body"]["choices"][0]["message"]["content"]
            if content != f"request number {custom_id[1:]} of the bulk benchmark":
                wrong += 1
    return {
        "lines": lines,
        "distinct": len(seen),
        "duplicates": duplicates,
        "wrong": wrong,
        "complete": len(seen) == n and lines == n and not duplicates and not wrong,
    }


def emulator_stats(base_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(
        f"{base_url.removesuffix('/v1')}/_emulator/stats", timeout=60
    ).json()
    return stats


def run_once(
    n: int, *, batch_size: int, window: float, poll: float, backend: str
) -> dict[str, Any]:
    """N requests through ``autobatcher run``; a row for ``bulk.py``'s table."""
    with tempfile.TemporaryDirectory(prefix="bulk-run-") as directory:
        source = Path(directory) / "in.jsonl"
        output = Path(directory) / "out.jsonl"
        size = write_requests(source, n)
        print(f"  autobatcher run: {n:,} chat requests, {size / 1e6:.0f} MB ...", file=sys.stderr)
        with emulator_process() as emulator:
            time.sleep(0.2)
            before = emulator.cpu()
            result = run_command(
                emulator.base_url,
                source,
                output,
                batch_size=batch_size,
                window=window,
                poll=poll,
                backend=backend,
            )
            result["emulator_cpu"] = emulator.cpu() - before
        checked = check_output(output, n)
    summary = result["summary"] or {}
    result.update(
        n=n,
        ok=checked["distinct"] - checked["wrong"] if not checked["duplicates"] else 0,
        batch_size=batch_size,
        batches=summary.get("batches"),
        output=checked,
    )
    return result


def resume_once(
    n: int, *, batch_size: int, window: float, poll: float, backend: str
) -> dict[str, Any]:
    """N requests; ``autobatcher run`` killed with SIGKILL once a third of the output is
    written, then run again. Prints what it checks; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="bulk-resume-") as directory:
        source = Path(directory) / "in.jsonl"
        output = Path(directory) / "out.jsonl"
        write_requests(source, n)
        # slow enough that the kill lands while batches run upstream
        with emulator_process(lines_per_second=max(1000.0, n / 10)) as emulator:
            time.sleep(0.2)
            common: dict[str, Any] = {
                "batch_size": batch_size,
                "window": window,
                "poll": poll,
                "backend": backend,
            }
            first = run_command(
                emulator.base_url, source, output, kill_after_lines=n // 3, **common
            )
            written = _count_lines(output)
            second = run_command(emulator.base_url, source, output, **common)
            stats = emulator_stats(emulator.base_url)
        checked = check_output(output, n)
    rows = [
        [
            "first (SIGKILL)",
            f"{first['wall']:.1f}",
            f"{written:,}",
            "killed" if first["killed"] else f"exit {first['exit_status']}",
        ],
        [
            "the same command again",
            f"{second['wall']:.1f}",
            f"{checked['lines']:,}",
            f"exit {second['exit_status']}",
        ],
    ]
    print(table(("run", "wall s", "output lines after it", "ended"), rows))
    summary = second["summary"] or {}
    print(
        f"output: {checked['lines']:,} lines, {checked['distinct']:,} distinct custom_ids, "
        f"{checked['duplicates']} duplicate lines, {checked['wrong']} wrong answers: "
        + ("complete" if checked["complete"] else "INCOMPLETE")
    )
    print(
        f"emulator: {stats['total_executions']:,} executions for {n:,} requests, "
        f"{stats['duplicate_executions']} duplicate executions, "
        f"{stats['batches_created']} batches created"
    )
    print(f"second run: {summary.get('done_before', 0):,} answers were in the output already")
    ok = (
        checked["complete"]
        and stats["duplicate_executions"] == 0
        and stats["total_executions"] == n
        and first["killed"]
        and second["exit_status"] == 0
    )
    print("resume after kill -9: " + ("OK" if ok else "FAILED"))
    return {"first": first, "second": second, "stats_batches": stats["batches_created"], "ok": ok}
