"""The intake under pressure, and plain mode against run mode.

    .venv/bin/python benchmarks/intake.py                # both parts, asyncio and trio
    .venv/bin/python benchmarks/intake.py --part cap     # only the capped-intake rows

Part ``cap``: N callers with ``batch_size=100`` and ``max_queued_requests=200``, so almost every
caller waits for room in the intake stream, against the same run uncapped. A bound that woke
every blocked caller per freed place would make CPU per request grow with N; the memory
object stream admits one waiting sender per freed place, in order, so the ratio stays flat.

Part ``plain``: 2,000 calls with the default window (1 s) and poll interval (5 s), in plain mode
(``client = BatchOpenAI()`` … ``await client.close()``: the waiting callers drive the engine in
turn) and in run mode (``async with``). A hand-over between drivers must not move any batch's
next poll, so both finish in the same wall time.

Each run is a fresh client process against a fresh emulator process on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from _harness import OUR_PYTHON, machine_line, run_against_fresh_emulator, table


def _run(backend: str, n: int, extra: Sequence[str]) -> dict[str, Any]:
    args = ["--client", "autobatcher", "--backend", backend, "--n", str(n), *extra]
    result = run_against_fresh_emulator(OUR_PYTHON, "_worker.py", args)
    if not result["ok"]:
        raise RuntimeError(f"wrong answers in {backend} {extra}")
    return result


def _median_by(key: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: float(r[key]))
    return ordered[len(ordered) // 2]


def part_cap(backends: Sequence[str], sizes: Sequence[int], repeat: int) -> None:
    rows = []
    for backend in backends:
        for n in sizes:
            measured = {}
            for label, extra in (
                ("uncapped", ["--batch-size", "100"]),
                ("capped", ["--batch-size", "100", "--max-queued", "200"]),
            ):
                print(f"  {backend} N={n:,} {label} ...", file=sys.stderr, flush=True)
                runs = [_run(backend, n, extra) for _ in range(repeat)]
                measured[label] = _median_by("cpu", runs)
            per = {k: v["cpu"] / n * 1e6 for k, v in measured.items()}
            rows.append(
                [
                    backend,
                    f"{n:,}",
                    f"{per['uncapped']:.1f}",
                    f"{per['capped']:.1f}",
                    f"{per['capped'] / per['uncapped']:.2f}",
                    f"{measured['capped']['wall']:.2f}",
                ]
            )
    print("\nbatch_size=100; capped: max_queued_requests=200 (CPU µs per request, median)")
    print(
        table(
            ["backend", "N", "uncapped µs/req", "capped µs/req", "capped ÷ uncapped", "wall s"],
            rows,
        )
    )
    print("  target: capped ÷ uncapped ≤ 1.3")


def part_plain(backends: Sequence[str], n: int, repeat: int) -> None:
    rows = []
    defaults = ["--batch-size", "100", "--window", "1.0", "--poll", "5.0"]
    for backend in backends:
        walls: dict[str, list[float]] = {}
        for label, extra in (("run mode", defaults), ("plain mode", [*defaults, "--plain"])):
            print(f"  {backend} {label} ...", file=sys.stderr, flush=True)
            walls[label] = [float(_run(backend, n, extra)["wall"]) for _ in range(repeat)]
        run_wall = statistics.median(walls["run mode"])
        plain_wall = statistics.median(walls["plain mode"])
        rows.append(
            [
                backend,
                " / ".join(f"{w:.2f}" for w in walls["run mode"]),
                " / ".join(f"{w:.2f}" for w in walls["plain mode"]),
                f"{plain_wall / run_wall:.2f}",
            ]
        )
    print(f"\nN = {n:,}, default window 1 s and poll interval 5 s (wall seconds per run)")
    print(table(["backend", "run mode", "plain mode", "plain ÷ run (medians)"], rows))
    print("  target: plain ÷ run ≈ 1.0 (before the fix: ~2.0 in 4 of 6 runs)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("cap", "plain", "both"), default="both")
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 20_000])
    parser.add_argument("--plain-n", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; median kept")
    args = parser.parse_args(argv)
    print(f"machine: {machine_line()}", flush=True)
    if args.part in ("cap", "both"):
        part_cap(args.backends, args.n, args.repeat)
    if args.part in ("plain", "both"):
        part_plain(args.backends, args.plain_n, args.repeat)


if __name__ == "__main__":
    main()
