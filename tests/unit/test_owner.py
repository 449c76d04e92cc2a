"""Whether the holder of a claim is certainly dead, told from real processes of this
host: a dead one is, a live one is not, and nothing that cannot be told (another host,
another boot id: a cloned machine of the same name) is ever presumed dead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bgtaskex.owner import holder_is_gone, holder_name, running

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="needs Linux's /proc"
)

NAME = "from bgtaskex.owner import holder_name; print(holder_name(), flush=True)"


def _child(*then: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "; ".join([NAME, *then])], stdout=subprocess.PIPE, text=True
    )


def test_a_dead_process_is_gone_and_a_live_one_is_not() -> None:
    child = _child("import time", "time.sleep(60)")
    assert child.stdout is not None
    claim = child.stdout.readline().strip() + "/0a1b2c3d.0"
    try:
        assert not holder_is_gone(claim)
    finally:
        child.kill()
        child.wait()
    assert holder_is_gone(claim)


def test_another_boot_id_or_host_is_never_presumed_dead() -> None:
    child = _child()
    assert child.stdout is not None
    host, pid, mark = child.stdout.readline().strip().split(":")
    child.wait()
    boot, namespace, started = mark.split(".")
    assert holder_is_gone(f"{host}:{pid}:{mark}/0a1b2c3d.0")  # dead, this boot: gone
    cloned = f"{host}:{pid}:{'f' * len(boot)}.{namespace}.{started}/0a1b2c3d.0"
    assert not holder_is_gone(cloned)  # another machine of the same name, or a reboot
    assert not holder_is_gone(f"other-{host}:{pid}:{mark}/0a1b2c3d.0")
    assert not holder_is_gone(f"{host}:{pid}:/0a1b2c3d.0")  # no mark: cannot tell


def test_this_process_is_gone_only_for_runs_it_no_longer_has() -> None:
    claim = f"{holder_name()}/feedc0de.0"
    assert holder_is_gone(claim)
    with running("feedc0de"):
        assert not holder_is_gone(claim)
    assert holder_is_gone(claim)


def test_a_long_host_name_leaves_the_mark_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """#15 attack: with a 64-character host name the name was cut to 100 characters
    inside its mark, and a live run read as dead (its task taken over while it ran)."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 60 + ".example")
    claim = f"{holder_name()}/feed0001.63"
    with running("feed0001"):
        assert not holder_is_gone(claim[:100])  # as stored: Str(100)
    assert len(claim) <= 100
