"""The real `bgtaskex` command on a terminal and without one.

A pseudo-terminal (the `pty` module) stands for the operator's terminal: the child gets
the slave end as stdin, stdout and stderr; the test reads the master end until the
child closes it, with a deadline. The same commands with pipes must print plain text.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.client import connect
from bgtaskex.config import Settings
from tests.acceptance.conftest import Bgx, command, describe, summary

LOOPER = "tests.ops_actions:Looper"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

pytestmark = pytest.mark.timeout(120)


class Terminal:
    """One `bgtaskex` process whose stdin, stdout and stderr are a pseudo-terminal."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        master, slave = os.openpty()
        # A real terminal has a size; a fresh pty says 0x0.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=dict(env),
                start_new_session=True,  # the pty becomes its controlling terminal
            )
        finally:
            os.close(slave)
        self.master = master
        self.raw = b""
        self.closed = False

    @property
    def text(self) -> str:
        """What was shown so far, as text, with the terminal's \\r\\n made \\n."""
        return self.raw.decode("utf-8", "replace").replace("\r\n", "\n")

    @property
    def plain(self) -> str:
        return ANSI.sub("", self.text)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            chunk = os.read(self.master, 65536)
        except OSError as err:  # Linux: EIO once every slave fd is closed
            if err.errno != errno.EIO:
                raise
            chunk = b""
        if chunk:
            self.raw += chunk
        else:
            self.closed = True

    def read_until(self, wanted: str, timeout: float = 30.0) -> None:
        give_up = time.monotonic() + timeout
        while wanted not in self.plain:
            if self.closed:
                pytest.fail(f"the terminal closed before {wanted!r} appeared:\n{self.text}")
            if time.monotonic() > give_up:
                pytest.fail(f"timed out waiting for {wanted!r}:\n{self.text}")
            self._read(0.1)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout: float = 60.0) -> int:
        """Read until the child closes the terminal, then its exit code."""
        give_up = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() > give_up:
                self.proc.kill()
                pytest.fail(f"the command did not end within {timeout}s:\n{self.text}")
            self._read(0.1)
        os.close(self.master)
        return self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self.closed:
            self.closed = True
            os.close(self.master)


@pytest.fixture
def tty_env(cli_env: dict[str, str]) -> dict[str, str]:
    """A colour terminal, with no variable forcing colours on or off."""
    env = {
        k: v
        for k, v in cli_env.items()
        if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")
        and k not in ("LINES", "CLICOLOR", "CLICOLOR_FORCE", "TERM")
    }
    env["TERM"] = "xterm-256color"
    return env


@pytest.fixture
def terminal(tty_env: dict[str, str]) -> Any:
    started: list[Terminal] = []

    def start(*args: object, env: Mapping[str, str] | None = None) -> Terminal:
        term = Terminal(command(*args), {**tty_env, **(env or {})})
        started.append(term)
        return term

    yield start
    for term in started:
        term.kill()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tty.db'}"


def _tasks(url: str, lock: Path, *specs: tuple[str, Any], run: bool = False) -> list[int]:
    settings = Settings(database_url=url, lock_file=str(lock))
    with connect(settings=settings) as client:
        ids = [client.enqueue(name, [spec]) for name, spec in specs]
        if run:
            client.run_once()
        return ids


def test_list_in_colour_on_a_terminal_only(
    bgx: Bgx, terminal: Any, url: str, tmp_path: Path, tty_env: dict[str, str]
) -> None:
    (tid,) = _tasks(url, tmp_path / "run.lock", ("done", (LOOPER, {"total": 1})), run=True)

    term = terminal("--database-url", url, "list")
    assert term.finish() == 0, term.text
    assert "\x1b[" in term.text, term.text  # status colours and a bold header
    assert re.search(r"\x1b\[[0-9;]*32m(\x1b\[[0-9;]*m)*finished", term.text), term.text
    row = next(line for line in term.plain.splitlines() if line.strip().startswith(str(tid)))
    assert "done" in row and "finished" in row, term.plain

    piped = bgx("--database-url", url, "list", env=tty_env)
    assert piped.returncode == 0, describe(piped)
    assert "\x1b" not in piped.stdout + piped.stderr, describe(piped)
    # the same table, without the escapes (up to the ages, which may have moved on)
    assert [line.split()[:-4] for line in piped.stdout.splitlines()] == [
        line.split()[:-4] for line in term.plain.splitlines() if line.strip()
    ]

    no_color = terminal("--database-url", url, "list", env={"NO_COLOR": "1"})
    assert no_color.finish() == 0, no_color.text
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", no_color.text), no_color.text


def test_run_once_shows_live_progress_on_a_terminal(
    bgx: Bgx, terminal: Any, url: str, tmp_path: Path, tty_env: dict[str, str]
) -> None:
    lock = tmp_path / "run.lock"
    slow = (LOOPER, {"total": 12, "step": 0.05})  # 0.6 s of work: several refreshes
    (first,) = _tasks(url, lock, ("crawl", slow))

    term = terminal(
        "--database-url", url, "--import", "tests.ops_actions", "run-once", "--lock-file", lock
    )
    assert term.finish() == 0, term.text
    shown = term.plain
    assert f"task {first} crawl" in shown, shown  # the task's live bar
    assert re.search(r"step \d+", shown), shown  # the action's progress message
    assert re.search(r"\d+%", shown), shown
    assert f"task {first} crawl: finished" in shown, shown
    last = [line for line in shown.replace("\r", "\n").splitlines() if line.strip()][-1]
    assert re.match(r"run [0-9a-f]+: 1 finished", last.strip()), shown

    (second,) = _tasks(url, lock, ("crawl-again", slow))
    piped = bgx(
        "--database-url",
        url,
        "--import",
        "tests.ops_actions",
        "run-once",
        "--lock-file",
        lock,
        env=tty_env,
    )
    assert piped.returncode == 0, describe(piped)
    assert summary(piped)["finished"] == 1  # exactly one line: the summary
    assert piped.stderr == "" and "\x1b" not in piped.stdout, describe(piped)
    assert f"task {second}" not in piped.stdout


@pytest.mark.parametrize("answer", ["n", "y"])
def test_purge_asks_on_a_terminal(terminal: Any, url: str, tmp_path: Path, answer: str) -> None:
    lock = tmp_path / "run.lock"
    ended = _tasks(
        url, lock, ("a", (LOOPER, {"total": 1})), ("b", (LOOPER, {"total": 1})), run=True
    )
    (waiting,) = _tasks(url, lock, ("c", (LOOPER, {"total": 1})))

    term = terminal("--database-url", url, "purge", "--all")
    term.read_until("[y/N]")
    assert "Delete 2 ended task(s)" in term.plain, term.text
    term.type(answer + "\n")
    code = term.finish()
    after = term.plain.split("[y/N]:", 1)[1]
    lines = [line for line in after.splitlines() if line.strip() and line.strip() != answer]
    assert "Traceback" not in term.text, term.text
    with connect(settings=Settings(database_url=url, lock_file=str(lock))) as client:
        left = sorted(task.id for task in client.list_tasks())
    if answer == "n":
        # documented: a confirmation answered no is exit code 130, one line
        assert code == 130, term.text
        assert lines == ["bgtaskex: interrupted"], term.text
        assert left == sorted([*ended, waiting])  # nothing deleted
    else:
        assert code == 0, term.text
        assert lines == ["deleted 2 ended task(s)"], term.text
        assert left == [waiting]
