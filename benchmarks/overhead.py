"""Client overhead: N concurrent callers, each awaiting its own echo, through the Batch API.

    .venv/bin/python benchmarks/overhead.py                 # N = 10,000 and 50,000
    .venv/bin/python benchmarks/overhead.py --n 100000      # other sizes
    .venv/bin/python benchmarks/overhead.py --profile-dir /tmp/prof   # + cProfile of ours

Each variant runs in its own fresh process against a fresh emulator process on loopback
(short window and poll interval, so server latency does not dominate). Reported: wall time,
client CPU (user+sys, from getrusage deltas) per request, peak RSS (ru_maxrss), correctness
(every reply is the caller's own echo), and the emulator's CPU (from /proc/<pid>/stat).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from _harness import (
    INCUMBENT_PYTHON,
    OUR_PYTHON,
    ensure_incumbent,
    machine_line,
    run_against_fresh_emulator,
    table,
)


@attrs.frozen
class Variant:
    name: str
    client: str  # floor | autobatcher | incumbent
    backend: str
    batch_size: int
    journal: bool = False  # autobatcher with journal= a fresh SQLite file

    def command(self) -> tuple[Path, str, list[str]]:
        if self.client == "incumbent":
            return INCUMBENT_PYTHON, "_incumbent_worker.py", ["--batch-size", str(self.batch_size)]
        return (
            Path(OUR_PYTHON),
            "_worker.py",
            [
                "--client",
                self.client,
                "--backend",
                self.backend,
                "--batch-size",
                str(self.batch_size),
                *(["--journal"] if self.journal else []),
            ],
        )


VARIANTS = {
    v.name: v
    for v in (
        Variant("floor/asyncio", "floor", "asyncio", 50_000),
        Variant("ours/asyncio", "autobatcher", "asyncio", 50_000),
        Variant("floor/trio", "floor", "trio", 50_000),
        Variant("ours/trio", "autobatcher", "trio", 50_000),
        Variant("incumbent", "incumbent", "asyncio", 50_000),
        Variant("ours/asyncio bs=1000", "autobatcher", "asyncio", 1_000),
        Variant("incumbent bs=1000", "incumbent", "asyncio", 1_000),
        Variant("ours/asyncio journal", "autobatcher", "asyncio", 50_000, journal=True),
        Variant("ours/trio journal", "autobatcher", "trio", 50_000, journal=True),
    )
}
# the journal variants answer a different question (issue 11: what durability costs): opt in
DEFAULT_VARIANTS = tuple(name for name, v in VARIANTS.items() if not v.journal)


def run_variant(
    variant: Variant,
    n: int,
    *,
    repeat: int = 1,
    window: float = 0.05,
    poll: float = 0.05,
    profile: str | None = None,
) -> dict[str, Any]:
    """Run one variant ``repeat`` times (fresh processes each time); keep the median by CPU."""
    python, script, args = variant.command()
    args = [*args, "--n", str(n), "--window", str(window), "--poll", str(poll)]
    if profile:
        args += ["--profile", profile]
    runs = [run_against_fresh_emulator(python, script, args) for _ in range(repeat)]
    runs.sort(key=lambda r: float(r["cpu"]))
    result = runs[len(runs) // 2]
    result["variant"] = variant.name
    result["runs_cpu"] = [r["cpu"] for r in runs]
    return result


def row(r: dict[str, Any]) -> list[str]:
    n = int(r["n"])
    return [
        str(r["variant"]),
        f"{n:,}",
        f"{r['wall']:.2f}",
        f"{r['cpu']:.2f}",
        f"{r['cpu'] / n * 1e6:.1f}",
        f"{r['gc_seconds'] / max(r['cpu'], 1e-9) * 100:.0f}%",
        f"{r['peak_rss_kb'] / 1024:.0f}",
        f"{(r['peak_rss_kb'] - r['rss_base_kb']) / 1024:.0f}",
        str(r.get("batches", "")),
        f"{r['emulator_cpu']:.2f}",
        "yes" if r["ok"] == n else f"NO ({r['ok']:,}/{n:,})",
    ]


HEADERS = (
    "variant",
    "N",
    "wall s",
    "client CPU s",
    "CPU µs/req",
    "GC share",
    "peak RSS MB",
    "RSS growth MB",
    "batches",
    "emulator CPU s",
    "all echoes ok",
)


def ratios(results: Sequence[dict[str, Any]]) -> list[str]:
    by = {r["variant"]: r for r in results}

    def per(name: str, key: str = "cpu") -> float | None:
        r = by.get(name)
        return None if r is None else float(r[key]) / int(r["n"])

    out: list[str] = []

    def ratio(label: str, a: str, b: str, key: str = "cpu", target: str = "") -> None:
        x, y = per(a, key), per(b, key)
        if x is not None and y is not None and y > 0:
            out.append(f"{label}: {x / y:.2f}{'  (target ' + target + ')' if target else ''}")

    ratio("CPU ours/asyncio ÷ floor/asyncio", "ours/asyncio", "floor/asyncio", target="≤ 1.2")
    ratio("CPU ours/trio ÷ floor/trio", "ours/trio", "floor/trio")
    ratio("CPU ours/asyncio ÷ incumbent", "ours/asyncio", "incumbent", target="≤ 0.33")
    ratio("CPU ours/trio ÷ ours/asyncio", "ours/trio", "ours/asyncio", target="≤ 1.3")
    ratio(
        "peak RSS ours/asyncio ÷ incumbent",
        "ours/asyncio",
        "incumbent",
        key="peak_rss_kb",
        target="≤ 0.5",
    )
    ratio("peak RSS ours/trio ÷ incumbent", "ours/trio", "incumbent", key="peak_rss_kb")
    ratio(
        "CPU ours/asyncio journal ÷ ours/asyncio",
        "ours/asyncio journal",
        "ours/asyncio",
        target="≤ 1.5",
    )
    ratio("CPU ours/trio journal ÷ ours/trio", "ours/trio journal", "ours/trio", target="≤ 1.5")
    ratio("wall ours/asyncio ÷ floor/asyncio", "ours/asyncio", "floor/asyncio", key="wall")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        default=list(DEFAULT_VARIANTS),
        help="default: all but the journal ones",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; median kept")
    parser.add_argument("--window", type=float, default=0.05)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--profile-dir", default=None, help="cProfile ours and floor into DIR")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    if any(VARIANTS[v].client == "incumbent" for v in args.variants):
        ensure_incumbent()
    print(f"machine: {machine_line()}", flush=True)
    everything: list[dict[str, Any]] = []
    for n in args.n:
        results: list[dict[str, Any]] = []
        for name in args.variants:
            variant = VARIANTS[name]
            profile = None
            if args.profile_dir and variant.client != "incumbent":
                Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
                slug = name.replace("/", "-").replace(" ", "").replace("=", "")
                profile = str(Path(args.profile_dir) / f"{slug}-{n}.prof")
            print(f"  running {name} N={n:,} ...", file=sys.stderr, flush=True)
            results.append(
                run_variant(
                    variant,
                    n,
                    repeat=args.repeat,
                    window=args.window,
                    poll=args.poll,
                    profile=profile,
                )
            )
        print(f"\nN = {n:,}" + (" (cProfile on: CPU figures inflated)" if args.profile_dir else ""))
        print(table(HEADERS, [row(r) for r in results]))
        for line in ratios(results):
            print(f"  {line}")
        everything.extend(results)
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
