"""Memory per waiting request: RSS growth while N requests wait.

    .venv/bin/python benchmarks/memory.py            # N = 20,000
    .venv/bin/python benchmarks/memory.py --n 45000

Two situations, each client in a fresh process against a fresh emulator process:

* ``window``: N requests wait in an open window (window = 1 h, batch size above N), measured
  once every caller has submitted;
* ``in flight``: N requests wait on a submitted batch the emulator keeps ``validating`` for an
  hour (measured once the batch is created).

RSS (VmRSS) after ``gc.collect()`` minus RSS before the callers were spawned, divided by N. The
``tasks`` row is N parked tasks holding the same request arguments and nothing else: what the
caller's own code costs whatever client it uses; the last column subtracts it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _harness import (
    INCUMBENT_PYTHON,
    OUR_PYTHON,
    ensure_incumbent,
    machine_line,
    run_against_fresh_emulator,
    table,
)

CLIENTS = (
    ("tasks", "asyncio"),
    ("floor", "asyncio"),
    ("autobatcher", "asyncio"),
    ("tasks", "trio"),
    ("floor", "trio"),
    ("autobatcher", "trio"),
    ("incumbent", "asyncio"),
)
LABEL = {"autobatcher": "ours", "floor": "floor", "tasks": "tasks only", "incumbent": "incumbent"}
SLOW = {"validation_seconds": 3600.0}


def measure(client: str, backend: str, mode: str, n: int) -> dict[str, Any]:
    common = ["--mode", mode, "--n", str(n), "--batch-size", "50000", "--poll", "0.5"]
    emulator = SLOW if mode == "mem-flight" else {}
    if client == "incumbent":
        return run_against_fresh_emulator(
            INCUMBENT_PYTHON, "_incumbent_worker.py", common, emulator
        )
    python = Path(OUR_PYTHON)
    args = ["--client", client, "--backend", backend, *common]
    return run_against_fresh_emulator(python, "_worker.py", args, emulator)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--no-incumbent", action="store_true")
    args = parser.parse_args(argv)
    n: int = args.n
    if n >= 50_000:
        parser.error("--n must stay below the 50,000-line batch limit (one open window)")
    clients = [c for c in CLIENTS if not (args.no_incumbent and c[0] == "incumbent")]
    if any(c == "incumbent" for c, _ in clients):
        ensure_incumbent()
    print(f"machine: {machine_line()}")
    rows: list[list[str]] = []
    tasks_only: dict[str, float] = {}  # measured once (window), subtracted in both situations
    for mode, title in (("mem-window", "window"), ("mem-flight", "in flight")):
        for client, backend in clients:
            if client == "tasks" and mode == "mem-flight":
                continue
            result = measure(client, backend, mode, n)
            per = float(result["per_request"])
            if client == "tasks":
                tasks_only[backend] = per
            spawner = tasks_only.get(backend, 0.0)
            rows.append(
                [
                    title,
                    f"{LABEL[client]}/{backend}",
                    f"{n:,}",
                    f"{per:,.0f}",
                    "" if client == "tasks" else f"{per - spawner:,.0f}",
                ]
            )
    print(
        table(
            ("waiting in", "client", "N", "bytes/request", "bytes/request minus tasks-only"),
            rows,
        )
    )


if __name__ == "__main__":
    main()
