"""The command line: argument parsing, ``emulate`` serving, ``demo`` hand-off."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from autobatcher import _cli

ROOT = Path(__file__).resolve().parent.parent


def test_demo_arguments_are_parsed() -> None:
    args = _cli.build_parser().parse_args(
        [
            "demo",
            "-n",
            "50",
            "--backend",
            "trio",
            "--batch-size",
            "7",
            "--window",
            "0.5",
            "--poll",
            "0.1",
        ]
    )
    assert (args.requests, args.backend, args.batch_size, args.window, args.poll) == (
        50,
        "trio",
        7,
        0.5,
        0.1,
    )
    args = _cli.build_parser().parse_args(["demo"])
    assert (args.requests, args.backend, args.batch_size, args.window, args.poll) == (
        1000,
        "asyncio",
        100,
        0.2,
        0.2,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo_runs_end_to_end(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["demo", "-n", "120", "--batch-size", "50", "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert "requests answered : 120 (120 with their own echo)" in out
    assert "batches submitted : 3 (emulator saw 3)" in out
    assert "duplicate charges : 0" in out


def test_emulate_defaults_to_loopback() -> None:
    args = _cli.build_parser().parse_args(["emulate"])
    assert args.host == "127.0.0.1"
    assert args.flavour == "openai"


def test_bad_option_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["emulate", "--error-rate", "7"]) == 2
    assert "error_rate" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_python_m_emulate_serves_until_interrupted(backend: str) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autobatcher",
            "emulate",
            "--port",
            str(port),
            "--api-key",
            "k",
            "--flavour",
            "doubleword",
            "--lines-per-second",
            "1000",
            "--backend",
            backend,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert f"http://127.0.0.1:{port}/v1" in line
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/batches", headers={"Authorization": "Bearer k"}
        )
        assert response.status_code == 200
        stats = httpx.get(f"http://127.0.0.1:{port}/_emulator/stats").json()
        assert stats["api_calls"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
