"""One measured client in one fresh process (benchmark helper; run by the drivers).

Clients: ``floor`` (a minimal hand-written Batch API client: httpx + json + one native waiter
per request), ``autobatcher`` (this repository's package), ``tasks`` (N parked tasks and
nothing else: the spawner's own memory, for the memory benchmark).

Modes: ``overhead`` (N callers, each awaits its own echo; wall, CPU, peak RSS, correctness),
``mem-window`` (RSS growth while N requests wait in an open window), ``mem-flight`` (RSS
growth while N requests wait on a submitted, slow batch).

Callers are spawned the way the floor would spawn them on each backend: ``asyncio.create_task``
+ ``gather`` on asyncio, a nursery on trio; so we measure the client, not the spawner.
Prints one JSON object as its last stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import httpx

MODEL = "bench-model"
W = TypeVar("W")

_encode = json.JSONEncoder(separators=(",", ":")).encode
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def rss_kb() -> int:
    """Current resident set size (VmRSS), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def text_for(i: int) -> str:
    return f"request number {i} of the overhead benchmark"


# -- the floor: the irreducible work of any batching client ----------------------------------


class _Floor(Generic[W]):
    """Collect lines, flush by size or window, upload, create, poll, download, route."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        tg: anyio.abc.TaskGroup,
        *,
        batch_size: int,
        window: float,
        poll: float,
    ) -> None:
        self.http = http
        self.base = base_url
        self.tg = tg
        self.batch_size = batch_size
        self.window = window
        self.poll = poll
        self.lines: list[bytes] = []
        self.waiters: dict[str, W] = {}
        self.seq = 0
        self.gen = 0
        self.submitted = 0

    def _add(self, body: dict[str, Any], waiter: W) -> None:
        self.seq += 1
        custom_id = f"r{self.seq}"
        self.lines.append(
            f'{{"custom_id":"{custom_id}","method":"POST","url":"/v1/chat/completions",'
            f'"body":{_encode(body)}}}\n'.encode()
        )
        self.waiters[custom_id] = waiter
        if len(self.lines) >= self.batch_size:
            self._flush()
        elif len(self.lines) == 1:
            self.tg.start_soon(self._window, self.gen)

    async def _window(self, gen: int) -> None:
        await anyio.sleep(self.window)
        if gen == self.gen and self.lines:
            self._flush()

    def _flush(self) -> None:
        lines, waiters = self.lines, self.waiters
        self.lines, self.waiters = [], {}
        self.gen += 1
        self.tg.start_soon(self._run, lines, waiters)

    def _resolve(self, waiter: W, body: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _run(self, lines: list[bytes], waiters: dict[str, W]) -> None:
        http, base = self.http, self.base
        data = b"".join(lines)
        del lines
        r = await http.post(
            f"{base}/files",
            data={"purpose": "batch"},
            files={"file": ("batch.jsonl", data, "application/jsonl")},
        )
        r.raise_for_status()
        del data
        file_id = r.json()["id"]
        r = await http.post(
            f"{base}/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        r.raise_for_status()
        batch = r.json()
        self.submitted += 1
        while batch["status"] not in _TERMINAL:
            await anyio.sleep(self.poll)
            r = await http.get(f"{base}/batches/{batch['id']}")
            r.raise_for_status()
            batch = r.json()
        r = await http.get(f"{base}/files/{batch['output_file_id']}/content")
        r.raise_for_status()
        loads = json.loads
        resolve = self._resolve
        for line in r.content.splitlines():
            if line:
                result = loads(line)
                resolve(waiters.pop(result["custom_id"]), result["response"]["body"])
        if waiters:
            raise RuntimeError(f"{len(waiters)} requests got no result line")


class AsyncioFloor(_Floor["asyncio.Future[dict[str, Any]]"]):
    async def create(self, *, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._add({"model": model, "messages": messages}, future)
        return await future

    def _resolve(self, waiter: asyncio.Future[dict[str, Any]], body: dict[str, Any]) -> None:
        waiter.set_result(body)


class _TrioWaiter:
    __slots__ = ("event", "value")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.value: dict[str, Any] | None = None


class TrioFloor(_Floor[_TrioWaiter]):
    async def create(self, *, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
        import trio

        waiter = _TrioWaiter(trio.Event())
        self._add({"model": model, "messages": messages}, waiter)
        await waiter.event.wait()
        assert waiter.value is not None
        return waiter.value

    def _resolve(self, waiter: _TrioWaiter, body: dict[str, Any]) -> None:
        waiter.value = body
        waiter.event.set()


# -- spawning callers the native way -----------------------------------------------------------


async def spawn_all(backend: str, n: int, call: Callable[[int], Coroutine[Any, Any, bool]]) -> int:
    """Run ``call(i)`` for i in range(n) concurrently; return how many returned True."""
    if backend == "asyncio":
        tasks = [asyncio.create_task(call(i)) for i in range(n)]
        return sum(await asyncio.gather(*tasks))
    import trio

    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        if await call(i):
            ok += 1

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return ok


async def park(backend: str) -> None:
    if backend == "asyncio":
        await asyncio.get_running_loop().create_future()
    else:
        import trio

        await trio.Event().wait()


# -- the measured run ---------------------------------------------------------------------------


class GcTimer:
    """Wall time spent in the cyclic garbage collector, and collections per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t
            self.collections[info["generation"]] += 1


class Measure:
    def __init__(self, profile: str | None) -> None:
        self.profile_path = profile
        self.profiler = cProfile.Profile() if profile else None
        self.gc_timer = GcTimer()

    def start(self) -> None:
        gc.collect()
        self.rss_base = rss_kb()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.perf_counter()
        gc.callbacks.append(self.gc_timer)
        if self.profiler is not None:
            self.profiler.enable()

    def stop(self) -> dict[str, Any]:
        if self.profiler is not None:
            self.profiler.disable()
        t1 = time.perf_counter()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        gc.callbacks.remove(self.gc_timer)
        if self.profiler is not None and self.profile_path:
            self.profiler.dump_stats(self.profile_path)
        return {
            "wall": t1 - self.t0,
            "cpu_user": ru1.ru_utime - self.ru0.ru_utime,
            "cpu_sys": ru1.ru_stime - self.ru0.ru_stime,
            "cpu": (ru1.ru_utime - self.ru0.ru_utime) + (ru1.ru_stime - self.ru0.ru_stime),
            "peak_rss_kb": ru1.ru_maxrss,
            "rss_base_kb": self.rss_base,
            "gc_seconds": self.gc_timer.seconds,
            "gc_collections": self.gc_timer.collections,
        }


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


async def run_overhead(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.n
    measure = Measure(args.profile)
    extra: dict[str, Any] = {}
    journal_dir: tempfile.TemporaryDirectory[str] | None = None
    if args.client == "floor":
        measure.start()
        async with httpx.AsyncClient(timeout=600) as http, anyio.create_task_group() as tg:
            floor: AsyncioFloor | TrioFloor
            cls = AsyncioFloor if args.backend == "asyncio" else TrioFloor
            floor = cls(
                http,
                args.base_url,
                tg,
                batch_size=args.batch_size,
                window=args.window,
                poll=args.poll,
            )

            async def floor_call(i: int) -> bool:
                text = text_for(i)
                body = await floor.create(model=MODEL, messages=[{"role": "user", "content": text}])
                return bool(body["choices"][0]["message"]["content"] == text)

            ok = await spawn_all(args.backend, n, floor_call)
            tg.cancel_scope.cancel()  # window timers still asleep
        extra["batches"] = floor.submitted
    else:
        import autobatcher

        events: list[str] = []
        # a fresh journal in a fresh directory (SQLite adds -wal and -shm files beside it)
        journal_dir = tempfile.TemporaryDirectory(prefix="bench-journal-") if args.journal else None
        journal = None if journal_dir is None else os.path.join(journal_dir.name, "journal.db")
        measure.start()
        client = autobatcher.BatchOpenAI(
            api_key="bench",
            base_url=args.base_url,
            batch_size=args.batch_size,
            batch_window_seconds=args.window,
            poll_interval_seconds=args.poll,
            max_queued_requests=args.max_queued or max(100_000, n),
            event_hook=lambda event: events.append(event.kind),
            journal=journal,
        )

        async def ours_call(i: int) -> bool:
            text = text_for(i)
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}]
            )
            return completion.choices[0].message.content == text

        if args.plain:
            # the seed's usage: no task group; the waiting callers drive the engine in turn
            ok = await spawn_all(args.backend, n, ours_call)
            await client.close()
        else:
            async with client:
                ok = await spawn_all(args.backend, n, ours_call)
        extra["batches"] = events.count("batch_submitted")
    result = measure.stop()
    if journal_dir is not None:
        journal_files = os.scandir(journal_dir.name)
        extra["journal_mb"] = sum(f.stat().st_size for f in journal_files) / 1e6
        journal_dir.cleanup()
    result.update(extra)
    result["ok"] = ok
    return result


async def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Spawn N waiting callers, measure RSS growth once all are parked, then exit hard."""
    n: int = args.n
    flight = args.mode == "mem-flight"
    window = args.window if flight else 3600.0
    expected_batches = math.ceil(n / args.batch_size) if flight else 0

    async def measure_when(ready: Callable[[], bool], base: int) -> None:
        while not ready():  # noqa: ASYNC110 (a counter bumped by N tasks: polling is simplest)
            await anyio.sleep(0.02)
        await anyio.sleep(0.3)
        gc.collect()
        grown = rss_kb() - base
        emit({"n": n, "rss_base_kb": base, "rss_growth_kb": grown, "per_request": grown * 1024 / n})
        sys.stdout.flush()
        os._exit(0)

    gc.collect()
    if args.client == "tasks":
        base = rss_kb()

        async def park_call(i: int) -> bool:
            messages = [{"role": "user", "content": text_for(i)}]
            await park(args.backend)
            return bool(messages)

        async with anyio.create_task_group() as tg:
            tg.start_soon(measure_when, lambda: True, base)
            await spawn_all(args.backend, n, park_call)
    elif args.client == "floor":
        async with httpx.AsyncClient(timeout=600) as http, anyio.create_task_group() as tg:
            cls = AsyncioFloor if args.backend == "asyncio" else TrioFloor
            floor = cls(
                http, args.base_url, tg, batch_size=args.batch_size, window=window, poll=args.poll
            )
            gc.collect()
            base = rss_kb()
            started = 0

            async def floor_call(i: int) -> bool:
                nonlocal started
                started += 1
                await floor.create(model=MODEL, messages=[{"role": "user", "content": text_for(i)}])
                return True

            def floor_ready() -> bool:
                return started == n and floor.submitted >= expected_batches

            tg.start_soon(measure_when, floor_ready, base)
            await spawn_all(args.backend, n, floor_call)
    else:
        import autobatcher

        kinds: list[str] = []
        async with (
            autobatcher.open_batcher(
                api_key="bench",
                base_url=args.base_url,
                batch_size=args.batch_size,
                batch_window_seconds=window,
                poll_interval_seconds=args.poll,
                max_queued_requests=max(100_000, n),
                event_hook=lambda event: kinds.append(event.kind),
            ) as client,
            anyio.create_task_group() as tg,
        ):
            gc.collect()
            base = rss_kb()
            started = 0

            async def ours_call(i: int) -> bool:
                nonlocal started
                started += 1
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": text_for(i)}]
                )
                return True

            def ours_ready() -> bool:
                return started == n and kinds.count("batch_submitted") >= expected_batches

            tg.start_soon(measure_when, ours_ready, base)
            await spawn_all(args.backend, n, ours_call)
    raise AssertionError("unreachable: measure_when exits the process")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--client", choices=("floor", "autobatcher", "tasks"), required=True)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--mode", choices=("overhead", "mem-window", "mem-flight"), default="overhead"
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--window", type=float, default=0.05)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument(
        "--max-queued",
        type=int,
        default=None,
        help="autobatcher's max_queued_requests (default: max(100000, n))",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="autobatcher in plain mode (no async with; callers drive)",
    )
    parser.add_argument(
        "--journal",
        action="store_true",
        help="autobatcher with journal= a fresh SQLite file in a temporary directory",
    )
    parser.add_argument("--profile", default=None, help="write cProfile stats of the timed part")
    parser.add_argument(
        "--gc",
        choices=("on", "off", "freeze"),
        default="on",
        help="diagnosis only: run with the cyclic GC off or frozen",
    )
    args = parser.parse_args()
    if args.gc == "off":
        gc.disable()
    elif args.gc == "freeze":
        gc.freeze()
    if args.mode == "overhead":
        result = anyio.run(run_overhead, args, backend=args.backend)
        result.update(
            client=args.client, backend=args.backend, n=args.n, batch_size=args.batch_size
        )
        emit(result)
    else:
        anyio.run(run_memory, args, backend=args.backend)


if __name__ == "__main__":
    main()
