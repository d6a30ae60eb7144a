"""``autobatcher demo``: the client against the embedded emulator on 127.0.0.1."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import anyio

from ._config import BatcherConfig
from ._events import BatchEvent
from ._facade import open_batcher


def main(args: argparse.Namespace) -> int:
    backend: str = args.backend
    try:
        # The client's own checks, before anything starts: a bad value is one line, not a
        # traceback out of the running demo.
        BatcherConfig(
            api_key="sk-demo",
            base_url="http://127.0.0.1",
            batch_size=args.batch_size,
            batch_window_seconds=args.window,
            poll_interval_seconds=args.poll,
        )
    except (TypeError, ValueError) as exc:
        print(f"autobatcher demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        anyio.run(_demo, args, backend=backend)
    except KeyboardInterrupt:
        return 130
    return 0


async def _demo(args: argparse.Namespace) -> None:
    try:
        from .testing import serve_emulator
    except ImportError:  # pragma: no cover - depends on the install
        print(
            "autobatcher demo needs the 'emulator' extra; from a checkout of this "
            "repository: pip install -e '.[emulator]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None

    requests: int = args.requests
    counts: Counter[str] = Counter()
    started = time.monotonic()

    def show(event: BatchEvent) -> None:
        counts[event.kind] += 1
        if event.kind in {"batch_progress", "retry"}:
            return
        done = counts["batch_completed"]
        print(
            f"  {time.monotonic() - started:6.2f}s  {event.kind:<16} {event.batch_id or '':<28}"
            f" {event.requests:>5} requests   ({done} batches completed)",
            flush=True,
        )

    print(f"autobatcher demo: {requests:,} concurrent chat requests on {args.backend}")
    async with serve_emulator(lines_per_second=50_000.0, validation_seconds=0.05) as server:
        print(f"emulator listening on {server.base_url}")
        answers: dict[int, str] = {}
        async with open_batcher(
            api_key="sk-demo",
            base_url=server.base_url,
            batch_size=args.batch_size,
            batch_window_seconds=args.window,
            poll_interval_seconds=args.poll,
            event_hook=show,
        ) as client:

            async def ask(index: int) -> None:
                response = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"What is {index} + {index}?"}],
                )
                answers[index] = response.choices[0].message.content or ""

            async with anyio.create_task_group() as tg:
                for index in range(requests):
                    tg.start_soon(ask, index)
        stats = server.emulator.stats()
    wall = time.monotonic() - started
    correct = sum(answers.get(i) == f"What is {i} + {i}?" for i in range(requests))
    print()
    print(f"requests answered : {len(answers):,} ({correct:,} with their own echo)")
    print(f"batches submitted : {counts['batch_submitted']} (emulator saw {stats.batches_created})")
    print(f"duplicate charges : {stats.duplicate_executions}")
    print(f"wall time         : {wall:.2f}s")
    if answers:
        sample = min(answers)
        print(f"sample answer     : request {sample} -> {answers[sample]!r}")
