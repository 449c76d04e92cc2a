"""Claims under leases, for workers that run beside each other (`lock = "none"`).

A worker claims one task at a time (`Store.claim`): it writes its name, a fencing token
one higher than the task's last, and the end of its lease. While it holds the task, a
`Heartbeat` extends the lease; every write it makes carries the token, so once another
worker has taken the task over (the lease ran out: the worker was paused, cut off, or
died) its late writes are refused (`ClaimLost`) instead of overwriting the new owner's.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass

from .exceptions import StorageError
from .store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claims:
    """How a worker takes tasks when runs do not exclude each other (`lock = "none"`):
    it claims one task at a time under a lease of `lease` seconds, which a heartbeat
    extends while the task is held."""

    worker: str  # host:pid:random, shown by `show`
    lease: float = 60.0


def worker_id() -> str:
    """This process's worker name: host, pid and a random part."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Heartbeat:
    """While a claimed task is held, extend its lease every third of its length, from a
    thread of its own. When the claim turns out to be lost (the token was superseded, or
    no beat got through before the lease ran out), set `lost`: the runner then asks the
    action to stop and writes nothing more about the task."""

    def __init__(
        self, store: Store, task_id: int, token: int, lease: float, lost: threading.Event
    ) -> None:
        self.store, self.task_id, self.token, self.lease = store, task_id, token, lease
        self.lost = lost
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"bgtaskex-heartbeat-{task_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        held_until = time.monotonic() + self.lease
        while not self._done.wait(self.lease / 3):
            try:
                if self.store.heartbeat(self.task_id, self.token, self.lease):
                    held_until = time.monotonic() + self.lease
                    continue
                why = "another worker claimed it"
            except StorageError as err:
                if time.monotonic() < held_until:
                    log.warning("task %s: heartbeat failed (%s); retrying", self.task_id, err)
                    continue
                why = f"no heartbeat got through before the lease ran out ({err})"
            log.warning(
                "task %s: lost the claim (token %s): %s; asking its action to stop",
                self.task_id,
                self.token,
                why,
            )
            self.lost.set()
            return
