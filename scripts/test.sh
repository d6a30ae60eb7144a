#!/usr/bin/env bash
# Create or refresh .venv, then run every gate: ruff (lint and format), mypy --strict (the
# package, the tests and tests/typing_checks.py), and the test suite with a branch-coverage
# floor (each async test on asyncio in debug mode, asyncio with eager tasks on Python 3.12+,
# and trio). The suite runs on every core (pytest-xdist, two workers a core;
# PYTEST_XDIST_AUTO_NUM_WORKERS=N picks another number, the extra argument -n 0 runs it in
# this process).
# Needs only python3 (>= 3.10) on the machine. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "== ruff check"
.venv/bin/ruff check .
echo "== ruff format --check"
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest (branch coverage floor: [tool.coverage.report] fail_under in pyproject.toml)"
# Keep compiled bytecode between runs (an environment may set PYTHONDONTWRITEBYTECODE): without
# it every worker rewrites the asserts of every test module (under coverage's tracer) and every
# child process the tests start (the CLI, the emulator) compiles the package again: measured on
# 2 cores with 4 workers, starting the workers took 46 s of CPU instead of 22 s. The files go to
# __pycache__/ directories, which git ignores.
unset PYTHONDONTWRITEBYTECODE
# Two workers per core: many tests wait on real time (emulator processes, the kill tests'
# children), and a second worker per core runs while one waits. worksteal: an idle worker
# takes tests queued for a busy one (their durations are uneven).
export PYTEST_XDIST_AUTO_NUM_WORKERS=${PYTEST_XDIST_AUTO_NUM_WORKERS:-$((2 * $(getconf _NPROCESSORS_ONLN)))}
.venv/bin/python -m pytest -n auto --dist worksteal --cov --cov-report=term "$@"
