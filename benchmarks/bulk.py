"""Bulk jobs: a million chat requests through one client process, at flat memory.

    .venv/bin/python benchmarks/bulk.py                        # --mode map, N = 1,000,000
    .venv/bin/python benchmarks/bulk.py --n 200000 --backend trio
    .venv/bin/python benchmarks/bulk.py --no-floor             # skip the floor's 50k run
    .venv/bin/python benchmarks/bulk.py --mode run             # the autobatcher run command
    .venv/bin/python benchmarks/bulk.py --mode resume --no-floor   # kill -9 mid-run, resume

``--mode map``: N requests through ``client.map()`` (``_bulk_worker.py``: a generator of Batch
API input lines, read lazily; every result's key and echo checked, nothing kept), batches of
``--batch-size`` (50,000), against an emulator in another process on loopback. Reported: wall
time, throughput, client CPU per request, peak RSS (ru_maxrss) of the client process, the
most requests outstanding and batches in flight at once. Beside it, in the same run, the
hand-written floor of ``overhead.py`` (``_worker.py --client floor``) at 50,000 requests:
its CPU per request is the bar ("no more than the floor's at 50k").

``--mode memory``: what a request waiting on an uploaded batch costs (RSS growth ÷ N once
all are uploaded to an emulator holding its batches), for a short prompt and a 4 KB one, and
with ``max_resubmits=0``. ``--mode map memory`` runs both.

``--mode rerun``: the map with ``journal=`` a fresh SQLite file, then the same map again on
that journal (every answer recalled from it, no Files/Batches call), in one worker process.

``--mode run``: the same N requests as a JSONL file through the ``autobatcher run`` command
(a child process; its CPU and peak RSS from ``wait4``), the output checked line by line.
``--mode resume``: ``--resume-n`` requests (100,000) through ``autobatcher run``, killed with
SIGKILL once a third of the output is written, then the same command again: the output must
hold every request once and the emulator must have run each once (see ``_bulk_cli.py``).
Each mode is one function taking the parsed arguments and returning result rows; add one to
``MODES`` to extend this file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _bulk_cli import resume_once, run_once
from _harness import OUR_PYTHON, machine_line, run_against_fresh_emulator, table

HEADERS = (
    "what",
    "N",
    "batch size",
    "wall s",
    "req/s",
    "client CPU s",
    "CPU µs/req",
    "peak RSS MB",
    "peak outstanding",
    "peak batches in flight",
    "emulator CPU s",
    "all ok",
)


def row(name: str, r: dict[str, Any]) -> list[str]:
    n = int(r["n"])
    ok = int(r["ok"])
    return [
        name,
        f"{n:,}",
        f"{int(r['batch_size']):,}",
        f"{r['wall']:.1f}",
        f"{n / r['wall']:,.0f}",
        f"{r['cpu']:.1f}",
        f"{r['cpu'] / n * 1e6:.1f}",
        f"{r['peak_rss_kb'] / 1024:.0f}",
        f"{int(r['peak_outstanding']):,}" if "peak_outstanding" in r else "",
        str(r.get("peak_batches_in_flight", "")),
        f"{r['emulator_cpu']:.1f}",
        "yes" if ok == n else f"NO ({ok:,}/{n:,})",
    ]


def floor_at_50k(args: argparse.Namespace) -> dict[str, Any]:
    """The hand-written floor of overhead.py at 50,000 concurrent requests, one batch."""
    return run_against_fresh_emulator(
        OUR_PYTHON,
        "_worker.py",
        [
            "--client",
            "floor",
            "--backend",
            args.backend,
            "--n",
            "50000",
            "--batch-size",
            "50000",
            "--window",
            "0.05",
            "--poll",
            "0.05",
        ],
    )


def mode_map(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    worker_args = [
        "--mode",
        "map",
        "--backend",
        args.backend,
        "--n",
        str(args.n),
        "--batch-size",
        str(args.batch_size),
        "--window",
        str(args.window),
        "--poll",
        str(args.poll),
    ]
    if args.max_in_flight is not None:
        worker_args += ["--max-in-flight", str(args.max_in_flight)]
    if args.ordered:
        worker_args.append("--ordered")
    if args.plain:
        worker_args.append("--plain")
    print(f"  running client.map() N={args.n:,} ...", file=sys.stderr, flush=True)
    result = run_against_fresh_emulator(OUR_PYTHON, "_bulk_worker.py", worker_args)
    name = (
        f"map/{args.backend}"
        + (" ordered" if args.ordered else "")
        + (" plain" if args.plain else "")
    )
    return [(name, result)]


def mode_memory(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """What one request waiting on an uploaded batch costs, short and 4 KB prompts."""
    rows = []
    for n, pad, max_resubmits in ((200_000, 0, 3), (100_000, 4000, 3), (200_000, 0, 0)):
        print(f"  holding N={n:,} pad={pad} max_resubmits={max_resubmits} ...", file=sys.stderr)
        result = run_against_fresh_emulator(
            OUR_PYTHON,
            "_bulk_worker.py",
            [
                "--mode",
                "hold",
                "--backend",
                args.backend,
                "--n",
                str(n),
                "--pad",
                str(pad),
                "--max-resubmits",
                str(max_resubmits),
                "--batch-size",
                str(args.batch_size),
            ],
            {"lines_per_second": 1},
        )
        rows.append((f"hold/{args.backend} pad={pad} max_resubmits={max_resubmits}", result))
    return rows


def mode_rerun(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The map with a journal, then again on the same journal (everything recalled)."""
    print(f"  running client.map() with a journal, twice, N={args.n:,} ...", file=sys.stderr)
    result = run_against_fresh_emulator(
        OUR_PYTHON,
        "_bulk_worker.py",
        [
            "--mode",
            "rerun",
            "--backend",
            args.backend,
            "--n",
            str(args.n),
            "--batch-size",
            str(args.batch_size),
            "--window",
            str(args.window),
            "--poll",
            str(args.poll),
        ],
    )
    first = dict(result.pop("first_run"))
    first["emulator_cpu"] = result["emulator_cpu"]
    first["batch_size"] = result["batch_size"]
    return [
        (f"map/{args.backend} journal, first run", first),
        (f"map/{args.backend} journal, re-run (all recalled)", result),
    ]


def mode_run(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    result = run_once(
        args.n,
        batch_size=args.batch_size,
        window=args.window,
        poll=args.poll,
        backend=args.backend,
    )
    return [(f"autobatcher run/{args.backend}", result)]


def mode_resume(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    resume_once(
        args.resume_n,
        batch_size=args.batch_size,
        window=args.window,
        poll=args.poll,
        backend=args.backend,
    )
    return []


#: each mode: parsed arguments -> (row name, worker result) pairs
MODES: dict[str, Callable[[argparse.Namespace], list[tuple[str, dict[str, Any]]]]] = {
    "map": mode_map,
    "memory": mode_memory,
    "rerun": mode_rerun,
    "run": mode_run,
    "resume": mode_resume,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), nargs="+", default=["map"])
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument(
        "--window",
        type=float,
        default=30.0,
        help="batch_window_seconds: long, so batches flush at --batch-size (the end of the "
        "input flushes the rest at once)",
    )
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--max-in-flight", type=int, default=None, help="default: the client's")
    parser.add_argument("--ordered", action="store_true")
    parser.add_argument("--plain", action="store_true", help="a plain client (no async with)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor at 50k")
    parser.add_argument(
        "--resume-n",
        type=int,
        default=100_000,
        help="requests of --mode resume (killed with SIGKILL mid-run, then run again)",
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine_line()}", flush=True)
    rows: list[tuple[str, dict[str, Any]]] = []
    for mode in args.mode:
        if mode == "memory":
            for name, r in MODES[mode](args):
                print(
                    f"{name}: N={r['n']:,}, RSS growth {r['rss_growth_kb'] / 1024:.0f} MB, "
                    f"{r['per_request']:.0f} B per waiting request"
                )
            continue
        rows += MODES[mode](args)
    if not rows:
        return
    floor = None
    if not args.no_floor:
        print("  running the floor at 50,000 ...", file=sys.stderr, flush=True)
        floor = floor_at_50k(args)
        floor["batch_size"] = 50_000
        rows.append((f"floor/{args.backend} (overhead.py)", floor))
    if rows:
        print(table(HEADERS, [row(name, r) for name, r in rows]))
    if floor is not None:
        floor_per = floor["cpu"] / floor["n"]
        for name, r in rows[:-1]:
            ratio = (r["cpu"] / r["n"]) / floor_per
            print(f"CPU per request {name} ÷ floor at 50k: {ratio:.2f}  (target ≤ 1.0)")
    for name, r in rows:
        if "peak_rss_kb" in r and not name.startswith("floor"):
            verdict = "ok" if r["peak_rss_kb"] / 1024 <= 512 else "OVER"
            print(f"peak RSS {name}: {r['peak_rss_kb'] / 1024:.0f} MB (target ≤ 512: {verdict})")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
