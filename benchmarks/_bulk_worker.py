"""One bulk run in one fresh process (benchmark helper; run by ``bulk.py``).

``--mode map``: N chat requests through ``client.map()`` (a generator of Batch API input
lines, read lazily), every result checked (its key and its echo), nothing kept. Reports wall
time, client CPU (getrusage), peak RSS (ru_maxrss) and, sampled every 0.5 s, the largest
number of requests outstanding and of batches in flight.

``--mode rerun``: the ``map`` run twice in this process on one journal (a fresh SQLite file):
the second run answers every request from the journal. Reports the second run, with the
first under ``first_run``.

``--mode hold``: N requests (prompts padded by ``--pad`` characters) through ``client.map()``
with ``max_in_flight=N`` against an emulator that holds its batches (1 line/s): once all are
uploaded, the RSS growth over the start, after ``gc.collect()`` and glibc's ``malloc_trim``
(the upload's freed buffers would otherwise stay in RSS), divided by N: what a request
waiting on an uploaded batch costs. Then the process exits at once.

Prints one JSON object as its last stdout line.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import anyio
from _worker import MODEL, Measure, emit, rss_kb, text_for

CHAT = "/v1/chat/completions"


def requests(n: int, pad: int = 0) -> Iterator[dict[str, Any]]:
    padding = "y" * pad
    for i in range(n):
        yield {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": CHAT,
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": text_for(i) + padding}],
            },
        }


def trimmed_rss_kb() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS as it is
        pass
    return rss_kb()


async def run_hold(args: argparse.Namespace) -> dict[str, Any]:
    import autobatcher

    n: int = args.n
    submitted = 0

    def on_event(event: autobatcher.BatchEvent) -> None:
        nonlocal submitted
        submitted += event.kind == "batch_submitted"

    async with autobatcher.open_batcher(
        api_key="bench",
        base_url=args.base_url,
        batch_size=args.batch_size,
        batch_window_seconds=1.0,
        poll_interval_seconds=60.0,
        max_queued_requests=n,
        max_resubmits=args.max_resubmits,
        event_hook=on_event,
    ) as client:
        base = trimmed_rss_kb()
        async with client.map(requests(n, args.pad), max_in_flight=n):
            while submitted < -(-n // args.batch_size):  # noqa: ASYNC110 (a counter: polling is simplest)
                await anyio.sleep(0.2)
            await anyio.sleep(1.0)
            grown = trimmed_rss_kb() - base
            emit(
                {
                    "n": n,
                    "pad": args.pad,
                    "max_resubmits": args.max_resubmits,
                    "rss_growth_kb": grown,
                    "per_request": grown * 1024 / n,
                }
            )
            os._exit(0)
    raise AssertionError("unreachable: the process exits once measured")


async def run_map(args: argparse.Namespace) -> dict[str, Any]:
    import autobatcher

    n: int = args.n
    kinds: list[str] = []
    in_flight = 0
    peak_in_flight = 0

    def on_event(event: autobatcher.BatchEvent) -> None:
        nonlocal in_flight, peak_in_flight
        kinds.append(event.kind)
        if event.kind == "batch_submitted":
            in_flight += 1
            peak_in_flight = max(peak_in_flight, in_flight)
        elif event.kind in ("batch_completed", "batch_failed", "batch_expired", "batch_cancelled"):
            in_flight -= 1

    journal_dir = (
        tempfile.TemporaryDirectory(prefix="bench-bulk-")
        if args.journal and args.journal_path is None
        else None
    )
    journal = (
        args.journal_path
        if args.journal_path is not None
        else None
        if journal_dir is None
        else os.path.join(journal_dir.name, "bulk.journal")
    )
    options: dict[str, Any] = {
        "api_key": "bench",
        "base_url": args.base_url,
        "batch_size": args.batch_size,
        "batch_window_seconds": args.window,
        "poll_interval_seconds": args.poll,
        "event_hook": on_event,
        "journal": journal,
    }
    if args.max_queued is not None:
        options["max_queued_requests"] = args.max_queued
    measure = Measure(args.profile)
    peak_outstanding = 0
    rss_samples: list[int] = []
    ok = 0
    bad = 0
    measure.start()
    client = autobatcher.BatchOpenAI(**options)
    async with anyio.create_task_group() as tg:
        bulk = client.map(requests(n), ordered=args.ordered, max_in_flight=args.max_in_flight)

        async def sample() -> None:
            nonlocal peak_outstanding
            while True:
                await anyio.sleep(0.5)
                peak_outstanding = max(peak_outstanding, bulk.outstanding)
                rss_samples.append(rss_kb())

        tg.start_soon(sample)
        owner = contextlib.nullcontext() if args.plain else client
        async with owner, bulk as results:
            async for result in results:
                body = result.body
                if (
                    result.error is None
                    and body is not None
                    and result.key == f"req-{result.index}"
                    and body["choices"][0]["message"]["content"] == text_for(result.index)
                ):
                    ok += 1
                else:
                    bad += 1
        if args.plain:
            await client.close()
        tg.cancel_scope.cancel()
    measured = measure.stop()
    if journal_dir is not None:
        measured["journal_mb"] = sum(f.stat().st_size for f in os.scandir(journal_dir.name)) / 1e6
        journal_dir.cleanup()
    measured.update(
        n=n,
        ok=ok,
        bad=bad,
        batches=kinds.count("batch_submitted"),
        peak_batches_in_flight=peak_in_flight,
        peak_outstanding=peak_outstanding,
        max_in_flight=bulk.max_in_flight,
        rss_max_sampled_kb=max(rss_samples, default=0),
    )
    return measured


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--mode", choices=("map", "hold", "rerun"), default="map")
    parser.add_argument("--pad", type=int, default=0, help="hold: characters added to prompts")
    parser.add_argument("--max-resubmits", type=int, default=3, help="hold: the client's")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--window", type=float, default=0.05)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--max-in-flight", type=int, default=None)
    parser.add_argument("--max-queued", type=int, default=None)
    parser.add_argument("--ordered", action="store_true")
    parser.add_argument("--plain", action="store_true", help="a plain client (no async with)")
    parser.add_argument("--journal", action="store_true")
    parser.add_argument("--journal-path", default=None, help="(rerun: set by the worker)")
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    if args.mode == "hold":
        anyio.run(run_hold, args, backend=args.backend)
    if args.mode == "rerun":
        # the same map twice on one journal: the second run answers everything from it
        with tempfile.TemporaryDirectory(prefix="bench-rerun-") as directory:
            args.journal_path = os.path.join(directory, "bulk.journal")
            first = anyio.run(run_map, args, backend=args.backend)
            result = anyio.run(run_map, args, backend=args.backend)
            result["first_run"] = first
    else:
        result = anyio.run(run_map, args, backend=args.backend)
    result.update(mode=args.mode, backend=args.backend, batch_size=args.batch_size)
    emit(result)


if __name__ == "__main__":
    main()
