"""Scaling curve: client CPU per request for N = 1k, 10k, 50k, 100k (should stay flat).

    .venv/bin/python benchmarks/scaling.py
    .venv/bin/python benchmarks/scaling.py --n 1000 10000 50000 100000 200000

Same measurement as ``overhead.py`` (fresh worker and emulator processes per point, batches of
up to 50,000 lines). Besides CPU per request at each N, a least-squares fit
``CPU = fixed + marginal * N`` separates the per-run fixed cost from the per-request cost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from _harness import machine_line, table
from overhead import VARIANTS, run_variant

DEFAULT_VARIANTS = ("floor/asyncio", "ours/asyncio", "ours/trio")


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b x``; returns (a, b)."""
    k = len(points)
    sx = sum(x for x, _ in points)
    sy = sum(y for _, y in points)
    sxx = sum(x * x for x, _ in points)
    sxy = sum(x * y for x, y in points)
    b = (k * sxy - sx * sy) / (k * sxx - sx * sx)
    return (sy - b * sx) / k, b


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000, 50_000, 100_000])
    parser.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), default=list(DEFAULT_VARIANTS)
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine_line()}")
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for name in args.variants:
        for n in args.n:
            print(f"  running {name} N={n:,} ...", file=sys.stderr, flush=True)
            results.setdefault(name, {})[n] = run_variant(VARIANTS[name], n)
    rows: list[list[str]] = []
    for name, by_n in results.items():
        per = {n: float(r["cpu"]) / n * 1e6 for n, r in by_n.items()}
        fixed, marginal = fit([(n, float(r["cpu"])) for n, r in by_n.items()])
        big = [v for n, v in per.items() if n >= 10_000]
        spread = max(big) / min(big) if big else float("nan")
        ok = all(r["ok"] == n for n, r in by_n.items())
        rows.append(
            [
                name,
                *(f"{per[n]:.1f}" for n in args.n),
                f"{marginal * 1e6:.1f}",
                f"{fixed * 1e3:.0f}",
                f"{spread:.2f}",
                "yes" if ok else "NO",
            ]
        )
    print(
        table(
            (
                "variant",
                *(f"CPU µs/req N={n:,}" for n in args.n),
                "marginal µs/req (fit)",
                "fixed ms (fit)",
                "max/min µs/req, N ≥ 10k",
                "all echoes ok",
            ),
            rows,
        )
    )


if __name__ == "__main__":
    main()
