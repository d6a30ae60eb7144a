# mypy: ignore-errors
# This script runs only in benchmarks/.venvs/incumbent, where ``autobatcher`` is the PyPI
# release 0.12.0 (openai-SDK based, untyped for our purposes). In our venv mypy would resolve
# ``autobatcher`` to this repository's package, so checking it here would be meaningless.
"""The incumbent, ``autobatcher==0.12.0`` from PyPI, measured like ``_worker.py`` measures ours.

It uses its Batch API path (``completion_window="24h"``), pointed at the emulator through
``base_url``/``api_key``. Callers are spawned with ``asyncio.create_task`` + ``gather`` (it is
asyncio-only). Prints one JSON object as its last stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sys

from _worker import MODEL, Measure, emit, rss_kb, spawn_all, text_for

import autobatcher
from autobatcher import BatchOpenAI  # the PyPI release, imported before any measurement

assert autobatcher.__version__ == "0.12.0", autobatcher.__file__


def make_client(args, window, kinds):
    return BatchOpenAI(
        api_key="bench",
        base_url=args.base_url,
        batch_size=args.batch_size,
        batch_window_seconds=window,
        poll_interval_seconds=args.poll,
        completion_window="24h",
        batch_event_handler=lambda event: kinds.append(event["event"]),
    )


async def run_overhead(args):
    kinds: list[str] = []
    measure = Measure(args.profile)
    measure.start()
    client = make_client(args, args.window, kinds)

    async def call(i):
        text = text_for(i)
        completion = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}]
        )
        return completion.choices[0].message.content == text

    ok = await spawn_all("asyncio", args.n, call)
    await client.close()
    result = measure.stop()
    result.update(ok=ok, batches=kinds.count("batch_submitted"))
    return result


async def run_memory(args):
    n = args.n
    flight = args.mode == "mem-flight"
    kinds: list[str] = []
    client = make_client(args, args.window if flight else 3600.0, kinds)
    expected = math.ceil(n / args.batch_size) if flight else 0
    gc.collect()
    base = rss_kb()
    started = 0

    async def call(i):
        nonlocal started
        started += 1
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text_for(i)}]
        )
        return True

    async def measure_when():
        while not (started == n and kinds.count("batch_submitted") >= expected):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        gc.collect()
        grown = rss_kb() - base
        emit({"n": n, "rss_base_kb": base, "rss_growth_kb": grown, "per_request": grown * 1024 / n})
        sys.stdout.flush()
        os._exit(0)

    watcher = asyncio.create_task(measure_when())
    await spawn_all("asyncio", n, call)
    await watcher


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument(
        "--mode", choices=("overhead", "mem-window", "mem-flight"), default="overhead"
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--window", type=float, default=0.05)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    if args.mode == "overhead":
        result = asyncio.run(run_overhead(args))
        result.update(client="incumbent", backend="asyncio", n=args.n, batch_size=args.batch_size)
        emit(result)
    else:
        asyncio.run(run_memory(args))


if __name__ == "__main__":
    main()
