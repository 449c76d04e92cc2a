"""Example actions, shipped so `bgtaskex demo` has real chunked work to show.

They are also the shortest complete examples of the Action contract: resumable state in
params, a deadline check between chunks, checkpoints, and an adaptive chunk size.
"""

from __future__ import annotations

import hashlib
import math
import time

from .action import Action


def _count_primes(lo: int, hi: int) -> int:
    """Primes in [lo, hi), by a segmented sieve."""
    if hi <= 2:
        return 0
    lo = max(lo, 2)
    root = math.isqrt(hi - 1)
    small = bytearray([1]) * (root + 1)
    small[:2] = b"\x00\x00"
    for p in range(2, math.isqrt(root) + 1):
        if small[p]:
            small[p * p :: p] = bytes(len(range(p * p, root + 1, p)))
    segment = bytearray([1]) * (hi - lo)
    for p in (i for i, flag in enumerate(small) if flag):
        start = max(p * p, (lo + p - 1) // p * p)
        segment[start - lo :: p] = bytes(len(range(start - lo, hi - lo, p)))
    return sum(segment)


class _Chunked(Action):
    """Shared pacing: stop before a chunk that would not end before the deadline."""

    def change_params_on_error(self) -> bool:
        self.params["chunk"] = max(1, int(self.params["chunk"]) // 2)
        return True

    def _time_for_another(self, deadline: float, last_chunk: float) -> bool:
        return time.time() + last_chunk < deadline


class CountPrimes(_Chunked):
    """Counts the primes below `limit`, `chunk` numbers at a time."""

    description = "count the primes below params['limit'], in chunks"

    def init_params(self) -> bool:
        self.params.setdefault("limit", 5_000_000)
        self.params.setdefault("chunk", 50_000)
        self.params["cursor"] = 2
        self.params["found"] = 0
        return int(self.params["limit"]) > 2

    def execute(self, deadline: float) -> bool:
        p = self.params
        last = 0.0
        while p["cursor"] < p["limit"]:
            if not self._time_for_another(deadline, last):
                return False
            began = time.time()
            hi = min(p["limit"], p["cursor"] + p["chunk"])
            p["found"] += _count_primes(p["cursor"], hi)
            p["cursor"] = hi
            self.progress(hi, p["limit"], f"{p['found']:,} primes so far")
            last = time.time() - began
        return True


class HashChain(Action):
    """Hashes a seed `rounds` times with SHA-256 (a stand-in for any long computation),
    saving a checkpoint every `checkpoint_every` rounds."""

    description = "iterate SHA-256 params['rounds'] times, checkpointing"

    def init_params(self) -> bool:
        self.params.setdefault("rounds", 2_000_000)
        self.params.setdefault("checkpoint_every", 200_000)
        self.params["done"] = 0
        self.params["digest"] = hashlib.sha256(b"bgtaskex").hexdigest()
        return True

    def execute(self, deadline: float) -> bool:
        p = self.params
        digest = bytes.fromhex(p["digest"])
        while p["done"] < p["rounds"]:
            if time.time() >= deadline - 0.05:
                return False
            n = min(10_000, p["rounds"] - p["done"])
            for _ in range(n):
                digest = hashlib.sha256(digest).digest()
            p["done"] += n
            p["digest"] = digest.hex()
            self.progress(p["done"], p["rounds"])
            if p["done"] % p["checkpoint_every"] == 0:
                self.checkpoint()
        return True


class NothingToDo(Action):
    """An action whose `init_params` finds nothing to do: it is skipped."""

    def init_params(self) -> bool:
        return False

    def execute(self, deadline: float) -> bool:  # pragma: no cover - never called
        raise AssertionError("a skipped action is never executed")
