"""The command line: argument parsing, ``emulate`` serving, ``demo`` hand-off."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import httpx
import pytest

from autobatcher import __version__, _cli
from autobatcher.testing import EmulatorConfig
from autobatcher.testing._config import QUIRK_FIELDS

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
    assert args.port == 8089
    # Unset options leave the emulator's own defaults in force.
    assert all(getattr(args, name) is None for name in _cli.EMULATOR_DEFAULTS)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"autobatcher {__version__}\n"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["demo", "-n", "-5"], "argument -n/--requests: must be >= 1, got -5"),
        (["demo", "-n", "many"], "argument -n/--requests: expected an integer, got 'many'"),
        (["demo", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["demo", "--window", "-1"], "argument --window: must be >= 0, got -1"),
        (["demo", "--poll", "0"], "argument --poll: must be > 0, got 0"),
        (["emulate", "--port", "70000"], "argument --port: must be between 0 and 65535"),
        (["emulate", "--port", "-1"], "argument --port: must be between 0 and 65535"),
        (["emulate", "--max-lines", "0"], "argument --max-lines: must be >= 1, got 0"),
        (["emulate", "--models", "a,,b"], "argument --models: expected comma-separated names"),
        (["emulate", "--flavour", "mistral"], "argument --flavour: invalid choice: 'mistral'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert says in err
    assert err.startswith("autobatcher")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["demo", "--batch-size", "60000"], "batch_size must be between 1 and 50000"),
        (["emulate", "--error-rate", "7"], "error_rate must be between 0 and 1"),
        (["emulate", "--drop-rate", "-0.5"], "drop_rate must be between 0 and 1"),
    ],
)
def test_values_the_configs_refuse_are_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert says in err


def test_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _cli.main(["emulate", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "in use" in err


def _all_options(
    parser: argparse.ArgumentParser, prefix: str = "autobatcher"
) -> list[tuple[str, argparse.Action]]:
    options: list[tuple[str, argparse.Action]] = []
    # argparse has no public way to list a parser's actions; its private list, on purpose
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                options += _all_options(sub, f"{prefix} {name}")
        elif not isinstance(action, argparse._HelpAction):
            options.append((f"{prefix} {'/'.join(action.option_strings)}", action))
    return options


def test_every_option_has_help_with_its_default() -> None:
    options = _all_options(_cli.build_parser())
    assert len(options) > 25
    for where, action in options:
        assert action.help, where
        if action.required:
            assert "(required)" in action.help, where
        elif not isinstance(action, argparse._VersionAction):
            assert "(default: " in action.help, where


def test_help_defaults_are_the_emulators() -> None:
    fields = {field.name: field.default for field in attrs.fields(EmulatorConfig)}
    assert {name: fields[name] for name in _cli.EMULATOR_DEFAULTS} == _cli.EMULATOR_DEFAULTS
    # Every setting is on the command line but these (a clock, and knobs tests set in code).
    not_on_the_command_line = {
        "clock",
        "error_statuses",
        "retry_after_on_errors",
        "drop_after_processing",
        # each flavour's quirks, switchable one by one in code (the limits are options)
        *(set(QUIRK_FIELDS) - {"max_lines", "max_file_bytes"}),
    }
    assert set(fields) - set(_cli.EMULATOR_DEFAULTS) == not_on_the_command_line


def test_models_are_comma_separated_and_repeatable() -> None:
    args = _cli.build_parser().parse_args(["emulate", "--models", "a, b", "--models", "c"])
    assert args.known_models == ["a", "b", "c"]
    assert EmulatorConfig(known_models=args.known_models).known_models == ("a", "b", "c")


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
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
