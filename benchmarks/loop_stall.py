"""Event-loop responsiveness while a ~200 MB batch goes up and a ~200 MB result comes down.

    .venv/bin/python benchmarks/loop_stall.py

A few thousand requests with ~50 KB messages each (one batch of ~200 MB, under
``max_batch_bytes``); the emulator (separate process) echoes them, so the result file is
~200 MB too. A ticker task sleeps 1 ms in a loop and records the longest gap between its
ticks (the loop's worst stall), on asyncio and on trio. Gaps are attributed to the phase in
which they ended: callers encoding and submitting, flush + upload + batch creation, polling +
download + parsing + routing, callers decoding their (large) replies.

``--journal`` runs the client with ``journal=`` a fresh SQLite file (issue 11: results are
committed in a worker thread before callers wake, so the commit of ~200 MB must not stall the
loop either).

Callers are spawned one per loop turn (spawn, then yield), so the spawner's own burst does not
count as the client's stall.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import anyio
from _harness import OUR_PYTHON, machine_line, run_against_fresh_emulator, table

PHASES = ("encode+submit", "upload+create", "poll+download+route", "callers decode")


def make_text(i: int, size: int) -> str:
    rng = random.Random(i)
    words = ["alpha", "beta", "gamma", 'say "hi"', "tab\there", "delta", "epsilon", "zeta"]
    parts: list[str] = [f"request {i}:"]
    length = len(parts[0])
    while length < size:
        word = rng.choice(words)
        parts.append(word)
        length += len(word) + 1
        if rng.random() < 0.02:
            parts.append("\n")
            length += 1
    return " ".join(parts)[:size]


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    import autobatcher

    n: int = args.n
    texts = [make_text(i, args.size) for i in range(n)]
    marks: dict[str, float] = {}
    gaps: list[tuple[float, float]] = []  # (end time, gap)
    done = False

    def hook(event: autobatcher.BatchEvent) -> None:
        if event.kind == "batch_submitted":
            marks.setdefault("submitted", time.perf_counter())
        elif event.kind == "batch_completed":
            marks.setdefault("completed", time.perf_counter())

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now, now - last))
            last = now

    ok = 0
    journal_dir = tempfile.TemporaryDirectory(prefix="bench-journal-") if args.journal else None
    journal = None if journal_dir is None else os.path.join(journal_dir.name, "journal.db")
    async with (
        autobatcher.open_batcher(
            api_key="bench",
            base_url=args.base_url,
            batch_size=n,
            batch_window_seconds=60.0,
            poll_interval_seconds=0.2,
            max_batch_bytes=200 * 1024 * 1024,
            timeout=600.0,
            event_hook=hook,
            journal=journal,
        ) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(ticker)
        await anyio.sleep(0.05)

        async def call(i: int) -> None:
            nonlocal ok
            completion = await client.chat.completions.create(
                model="bench-model", messages=[{"role": "user", "content": texts[i]}]
            )
            if completion.choices[0].message.content == texts[i]:
                ok += 1

        marks["start"] = time.perf_counter()
        if args.backend == "asyncio":
            tasks = []
            for i in range(n):
                tasks.append(asyncio.create_task(call(i)))
                await asyncio.sleep(0)
            marks["spawned"] = time.perf_counter()
            await asyncio.gather(*tasks)
        else:
            import trio

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(call, i)
                    await trio.lowlevel.checkpoint()
                marks["spawned"] = time.perf_counter()
        marks["done"] = time.perf_counter()
        done = True
    journal_mb = 0.0
    if journal_dir is not None:
        journal_mb = sum(f.stat().st_size for f in os.scandir(journal_dir.name)) / 1e6
        journal_dir.cleanup()
    bounds = [marks[k] for k in ("start", "spawned", "submitted", "completed", "done")]
    worst = dict.fromkeys(PHASES, 0.0)
    durations = {p: bounds[k + 1] - bounds[k] for k, p in enumerate(PHASES)}
    for end, gap in gaps:
        for k, phase in enumerate(PHASES):
            if bounds[k] <= end <= bounds[k + 1] + 0.5 * (k == len(PHASES) - 1):
                worst[phase] = max(worst[phase], gap)
                break
    during = [gap for end, gap in gaps if marks["start"] <= end]
    return {
        "backend": args.backend,
        "n": n,
        "request_mb": sum(len(t) for t in texts) / 1e6,
        "ok": ok,
        "max_gap": max(during),
        "worst": worst,
        "durations": durations,
        "ticks": len(during),
        "journal_mb": journal_mb,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3_900)
    parser.add_argument("--size", type=int, default=50_000, help="characters per message")
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    parser.add_argument(
        "--journal", action="store_true", help="the client with journal= a fresh SQLite file"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import json

        print(json.dumps(anyio.run(worker, args, backend=args.backend)), flush=True)
        return
    print(f"machine: {machine_line()}")
    rows: list[list[str]] = []
    for backend in args.backends:
        r = run_against_fresh_emulator(
            OUR_PYTHON,
            "loop_stall.py",
            [
                "--worker",
                "--backend",
                backend,
                "--n",
                str(args.n),
                "--size",
                str(args.size),
                *(["--journal"] if args.journal else []),
            ],
        )
        rows.append(
            [
                backend + (f" + journal ({r['journal_mb']:.0f} MB)" if args.journal else ""),
                f"{r['n']:,} x {args.size // 1000} KB = {r['request_mb']:.0f} MB",
                f"{r['max_gap'] * 1000:.1f}",
                *(f"{r['worst'][p] * 1000:.1f} ({r['durations'][p]:.1f} s)" for p in PHASES),
                "yes" if r["ok"] == r["n"] else f"NO ({r['ok']}/{r['n']})",
            ]
        )
    print(
        table(
            (
                "backend",
                "batch",
                "longest stall ms",
                *(f"{p}: worst ms (phase length)" for p in PHASES),
                "all echoes ok",
            ),
            rows,
        )
    )
    print("(a 1 ms ticker; a stall is the gap between two ticks, so ~1 ms is the idle value)")


if __name__ == "__main__":
    main()
