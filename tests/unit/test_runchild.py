"""The daemon's run children (bgtaskex.runchild.Children) on real forked processes."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from bgtaskex.processes import Process
from bgtaskex.runchild import Children, ChildRun


class _Sleeper:
    """A client whose run never ends by itself: the child is there until it is killed."""

    def forked(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run_once(self, **_: Any) -> None:
        # A grandchild keeps the report pipe open a while after the child is killed, so
        # the forking thread is still reading it when the stop reaps the child.
        if os.fork() == 0:
            time.sleep(1.5)
            os._exit(0)
        time.sleep(60)


def test_a_child_killed_and_reaped_by_a_second_stop_is_reported_not_raised() -> None:
    """A second stop (or stop_timeout) kills the child and reaps it from another thread
    while the forking thread waits for it: that thread reports a killed child instead
    of dying on ECHILD with a traceback in the daemon's log."""
    children = Children()
    ended: list[ChildRun | BaseException] = []

    def fork_and_wait() -> None:
        try:
            ended.append(children.run(_Sleeper(), Process("p"), None, threading.Event()))  # type: ignore[arg-type]
        except BaseException as err:
            ended.append(err)

    waiter = threading.Thread(target=fork_and_wait)
    waiter.start()
    give_up = time.monotonic() + 10
    while children.pid is None and time.monotonic() < give_up:
        time.sleep(0.01)
    assert children.pid is not None, "the child was not forked"
    children.kill()
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(ended) == 1 and isinstance(ended[0], ChildRun), ended
    assert ended[0].died is not None and not ended[0].ran
