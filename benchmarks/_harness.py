"""Shared plumbing for the benchmark drivers: the emulator process, workers, CPU readings.

Every measured client runs in a fresh worker process (``_worker.py`` in this venv,
``_incumbent_worker.py`` in the incumbent's own venv) against an emulator running in another
process (``_emulator_proc.py``) on loopback. Workers print one JSON object on their last
stdout line.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUR_PYTHON = sys.executable
INCUMBENT_VENV = HERE / ".venvs" / "incumbent"
INCUMBENT_PYTHON = INCUMBENT_VENV / "bin" / "python"
INCUMBENT_VERSION = "0.12.0"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def our_env() -> dict[str, str]:
    """The environment for processes of this venv: the repository first on ``sys.path``, so
    the package is importable whether or not it is installed (never used for the incumbent)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def ensure_incumbent() -> Path:
    """Create ``benchmarks/.venvs/incumbent`` with autobatcher==0.12.0 from PyPI if missing.

    The incumbent has our import name, so it lives in its own venv and is only ever imported
    there (by ``_incumbent_worker.py``).
    """
    if INCUMBENT_PYTHON.exists():
        probe = subprocess.run(
            [
                str(INCUMBENT_PYTHON),
                "-I",  # not the current directory: /work/main/autobatcher would shadow it
                "-c",
                "import autobatcher; print(autobatcher.__version__)",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() == INCUMBENT_VERSION:
            return INCUMBENT_PYTHON
    print(f"creating {INCUMBENT_VENV} with autobatcher=={INCUMBENT_VERSION} ...", flush=True)
    subprocess.run([OUR_PYTHON, "-m", "venv", str(INCUMBENT_VENV)], check=True)
    subprocess.run(
        [str(INCUMBENT_PYTHON), "-m", "pip", "install", "-q", f"autobatcher=={INCUMBENT_VERSION}"],
        check=True,
    )
    return INCUMBENT_PYTHON


def proc_cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class EmulatorProcess:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return proc_cpu_seconds(self.proc.pid)


@contextmanager
def emulator_process(**config: Any) -> Iterator[EmulatorProcess]:
    """A fresh emulator in its own process; ``config`` are ``EmulatorConfig`` fields."""
    proc = subprocess.Popen(
        [OUR_PYTHON, str(HERE / "_emulator_proc.py"), json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
        env=our_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited before listening")
        port = int(json.loads(line)["port"])
        yield EmulatorProcess(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_worker(
    python: str | Path,
    script: str,
    args: Sequence[str],
    *,
    code: Path | None = None,
    timeout: float = 900,
) -> dict[str, Any]:
    """Run one worker process; return the JSON object on its last stdout line. ``code``: a
    directory whose ``autobatcher`` package is imported instead of this checkout's."""
    env = None if Path(python) == INCUMBENT_PYTHON else our_env()
    if code is not None:
        env = env if env is not None else dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [str(python), str(HERE / script), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {script} {' '.join(args)} failed (rc={done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_against_fresh_emulator(
    python: str | Path,
    script: str,
    args: Sequence[str],
    emulator_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One variant: fresh emulator process + fresh worker; adds the emulator's CPU delta."""
    with emulator_process(**dict(emulator_config or {})) as emu:
        time.sleep(0.2)  # let the emulator settle after its imports
        before = emu.cpu()
        result = run_worker(python, script, ["--base-url", emu.base_url, *args])
        result["emulator_cpu"] = emu.cpu() - before
    return result


def machine_line() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}, "
        f"{datetime.date.today().isoformat()}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (also readable on a terminal)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(out)
