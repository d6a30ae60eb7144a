"""A program that asks N questions through a journaled client: the victim of the kill tests.

The tests run it with :func:`run_child` (or :class:`Child`): a process forked from a fork
server that has already imported this module (and so autobatcher, anyio, httpx, trio), so a
run costs a fork instead of an interpreter start and its imports. Each run is still a process
of its own, with its own event loop, HTTP connections and journal connection, and ``SIGKILL``
ends it at once with no cleanup of any kind. It reports over a pipe: ``PAUSED <point>`` when
it hangs at that point of the batch lifecycle (for the test to kill it there), else
``ANSWERS {json}`` at the end, or ``ERROR <traceback>``.

By hand (the same program, reporting on stdout)::

    python tests/_journal_child.py BASE_URL JOURNAL N BACKEND [PAUSE_AT]
"""

from __future__ import annotations

import atexit
import faulthandler
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from autobatcher import BatchOpenAI, SqliteStore
from autobatcher._job import JobRecord

API_KEY = "sk-journal"

Report = Callable[[str], None]


class _PausingStore(SqliteStore):
    """Hangs right after the first results are committed, before any caller is woken."""

    def __init__(self, path: str, report: Report) -> None:
        super().__init__(path)
        self._report = report

    def save_results(self, record: JobRecord, results: Sequence[tuple[str, bytes]]) -> None:
        super().save_results(record, results)
        self._report("PAUSED after-commit")
        time.sleep(120)  # a worker thread, hanging until the test SIGKILLs the process


async def main(
    report: Report, base_url: str, journal: str, n: int, pause_at: str | None, tag: str = ""
) -> None:
    """Ask ``n`` questions (``{tag}question {i}``); with ``pause_at``, hang there instead."""

    async def pause(point: str) -> None:
        report(f"PAUSED {point}")
        await anyio.sleep(120)  # until the test SIGKILLs the process

    async def on_request(request: httpx.Request) -> None:
        path = request.url.path
        if pause_at == "mid-upload" and request.method == "POST" and path.endswith("/files"):
            await pause(pause_at)
        if pause_at == "poll" and request.method == "GET" and "/batches/" in path:
            await pause(pause_at)

    creates: list[str] = []

    async def on_response(response: httpx.Response) -> None:
        request = response.request
        path = request.url.path
        if pause_at == "after-upload" and request.method == "POST" and path.endswith("/files"):
            await pause(pause_at)
        if pause_at == "after-create" and request.method == "POST" and path.endswith("/batches"):
            await pause(pause_at)
        if pause_at == "after-resubmit" and request.method == "POST" and path.endswith("/batches"):
            creates.append(path)
            if len(creates) == 2:  # the batch that took over what the first did not run
                await pause(pause_at)
        if pause_at == "mid-download" and path.endswith("/content"):
            await pause(pause_at)

    http = httpx.AsyncClient(event_hooks={"request": [on_request], "response": [on_response]})
    store = _PausingStore(journal, report) if pause_at == "after-commit" else SqliteStore(journal)
    answers: dict[int, str] = {}
    async with BatchOpenAI(
        api_key=API_KEY,
        base_url=base_url,
        http_client=http,
        journal=store,
        # the batch goes up when the last question is in, not when a timer says; at "window"
        # it never fills, and the questions wait in their lane. (The window is for requests
        # put back in a lane, to go in a new batch: after-resubmit.)
        batch_size=n + 1 if pause_at == "window" else n,
        batch_window_seconds=60.0 if pause_at == "window" else 0.3,
        poll_interval_seconds=0.05,
        max_retries=5,
    ) as client:

        async def ask(index: int) -> None:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"{tag}question {index}"}],
            )
            answers[index] = reply.choices[0].message.content or ""

        async with anyio.create_task_group() as tg:
            for index in range(n):
                tg.start_soon(ask, index)
            if pause_at == "window":
                await anyio.wait_all_tasks_blocked()
                await pause(pause_at)  # every request waits in its lane; nothing is uploaded
    await http.aclose()
    report("ANSWERS " + json.dumps(answers))


# -- the fork server ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _fork_server(fd: int) -> None:
    """The fork server's loop: ``run`` forks a child with the pipe it was given as its report
    channel and answers its pid; ``wait`` reaps a child and answers its exit status. Ends
    when the tests' end of the socket closes."""
    server = socket.socket(fileno=fd)
    while True:
        received = _receive(server)
        if received is None:
            return
        message, fds = received
        if "run" in message:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    server.close()
                    code = _child(fds[0], *message["run"])
                finally:
                    os._exit(code)
            os.close(fds[0])
            _send(server, {"pid": pid})
        else:
            _, status = os.waitpid(message["wait"], 0)
            _send(server, {"status": os.waitstatus_to_exitcode(status)})


def _child(
    fd: int, base_url: str, journal: str, n: int, backend: str, pause_at: str | None, tag: str
) -> int:
    """A forked child's body: ``main``, each report one JSON line on the pipe ``fd``."""
    # a child that hangs can be asked for its stacks: kill -USR1 PID
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    reports = os.fdopen(fd, "w", buffering=1)

    def report(line: str) -> None:
        reports.write(json.dumps(line) + "\n")  # one write, under PIPE_BUF: never interleaved

    try:
        anyio.run(main, report, base_url, journal, n, pause_at, tag, backend=backend)
    except BaseException:
        report("ERROR " + traceback.format_exc())
        return 1
    return 0


def _send(connection: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    socket.send_fds(connection, [json.dumps(message).encode() + b"\n"], list(fds))


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One line-framed message and the file descriptors sent with it; None at end of file."""
    data = b""
    fds: list[int] = []
    while not data.endswith(b"\n"):
        chunk, new_fds, _flags, _address = socket.recv_fds(connection, 65536, 4)
        if not chunk:
            return None
        data += chunk
        fds += new_fds
    return json.loads(data), fds


class _ForkServer:
    """A process that has imported this module (and so autobatcher, anyio, httpx, trio) and
    forks a child per run on request: a run costs a fork, not an interpreter start."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        python_path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests._journal_child import _fork_server; _fork_server({theirs.fileno()})",
            ],
            pass_fds=[theirs.fileno()],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        theirs.close()
        self._socket = ours
        self._lock = threading.Lock()  # one question at a time (tests ask from worker threads)

    def _ask(self, message: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        with self._lock:
            _send(self._socket, message, fds)
            answer = _receive(self._socket)
        if answer is None:
            raise RuntimeError("the fork server of the journal tests died")
        return answer[0]

    def fork(self, *args: object) -> tuple[int, int]:
        """A child running ``_child(fd, *args)``: its pid, and the pipe it reports on."""
        read_fd, write_fd = os.pipe()
        try:
            pid: int = self._ask({"run": args}, [write_fd])["pid"]
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child has its own: end of file means it is gone
        return pid, read_fd

    def wait(self, pid: int) -> int:
        """Reap the child ``pid`` (its exit code, negative for a signal) once it is gone."""
        status: int = self._ask({"wait": pid})["status"]
        return status

    def close(self) -> None:
        self._socket.close()  # the server's end of file: it returns
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


_fork_server_instance: _ForkServer | None = None
_fork_server_lock = threading.Lock()


def fork_server() -> _ForkServer:
    """This test process's fork server, started on first use, stopped at exit."""
    global _fork_server_instance
    with _fork_server_lock:
        if _fork_server_instance is None:
            _fork_server_instance = _ForkServer()
            atexit.register(_fork_server_instance.close)
        return _fork_server_instance


class Child:
    """One run of the program in a process of its own; :meth:`next_report` reads what it
    says, :meth:`kill` SIGKILLs it."""

    def __init__(
        self,
        base_url: str,
        journal: str,
        n: int,
        backend: str,
        pause_at: str | None = None,
        tag: str = "",
    ) -> None:
        self._server = fork_server()
        self.pid, self._reports = self._server.fork(base_url, journal, n, backend, pause_at, tag)
        self._buffer = b""
        self.exit_code: int | None = None

    def next_report(self, timeout: float) -> str:
        """The child's next report; ``EOFError`` if it ended without one."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self._reports], [], [], max(remaining, 0))
            if not readable:  # a hang guard only
                raise TimeoutError(f"the child (pid {self.pid}) said nothing for {timeout} s")
            chunk = os.read(self._reports, 65536)
            if not chunk:
                raise EOFError(f"the child (pid {self.pid}) ended without a report")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        report: str = json.loads(line)
        if report.startswith("ERROR "):
            raise RuntimeError(f"the child failed:\n{report.removeprefix('ERROR ')}")
        return report

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs. Returns once the process is gone."""
        if self.exit_code is None:
            os.kill(self.pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        """Wait for the child to end (it has reported its answers) and reap it."""
        if self.exit_code is None:
            self.exit_code = self._server.wait(self.pid)
            os.close(self._reports)


def run_child(
    base_url: str, journal: str, n: int, backend: str, pause_at: str | None, tag: str = ""
) -> str:
    """Run the program once: with ``pause_at``, SIGKILL it there and return "killed"; else
    return its ``ANSWERS`` line."""
    child = Child(base_url, journal, n, backend, pause_at, tag)
    try:
        report = child.next_report(timeout=60)
    except BaseException:
        child.kill()
        raise
    if pause_at is not None:
        child.kill()
        assert report == f"PAUSED {pause_at}", report
        return "killed"
    child.close()
    assert child.exit_code == 0, child.exit_code
    assert report.startswith("ANSWERS "), report
    return report


if __name__ == "__main__":
    base_url, journal, count, backend = sys.argv[1:5]
    pause = sys.argv[5] if len(sys.argv) > 5 else None
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    say = functools.partial(print, flush=True)
    anyio.run(main, say, base_url, journal, int(count), pause, backend=backend)
