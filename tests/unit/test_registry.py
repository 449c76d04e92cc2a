from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from bgtaskex import Action
from bgtaskex.examples import CountPrimes
from bgtaskex.exceptions import InvalidRef, ModuleUnavailable
from bgtaskex.registry import Registry, parse_ref


@pytest.mark.parametrize("ref", ["", "nocolon", "a:", ":B", "a b:C", "a:B:C", "1mod:C", None])
def test_malformed_refs(ref: object) -> None:
    with pytest.raises(InvalidRef):
        parse_ref(ref)  # type: ignore[arg-type]


def test_builtin_examples_always_allowed() -> None:
    assert Registry().resolve("bgtaskex.examples:CountPrimes") is CountPrimes


def test_undeclared_module_is_not_imported() -> None:
    import sys

    sys.modules.pop("tests.scripted", None)
    with pytest.raises(InvalidRef, match="not declared"):
        Registry(entry_points=False).resolve("tests.scripted:Noop")
    assert "tests.scripted" not in sys.modules


def test_declared_module_and_submodules() -> None:
    registry = Registry(["tests"], entry_points=False)
    cls = registry.resolve("tests.scripted:Noop")
    assert issubclass(cls, Action)
    assert registry.resolve("tests.scripted:Noop") is cls  # cached


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("tests.scripted:NotAnAction", "not a subclass"),
        ("tests.scripted:Missing", "has no 'Missing'"),
        ("tests.no_such_module:X", "cannot import"),
        ("bgtaskex:Action", "abstract base"),
    ],
)
def test_bad_refs_are_refused(ref: str, needle: str) -> None:
    with pytest.raises(InvalidRef, match=needle):
        Registry(["tests", "bgtaskex"], entry_points=False).resolve(ref)


def test_trusting_registry_imports_any_module() -> None:
    assert Registry(trust_refs=True).resolve("tests.scripted:Noop").__name__ == "Noop"


class Backoff(Action):
    """Its backoff attributes are set by each test (attack #14 finding 13)."""

    def execute(self, deadline: float) -> bool:
        return True


def resolve_with(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> type[Action]:
    monkeypatch.setattr(Backoff, name, value)
    return Registry(trust_refs=True).resolve(f"{__name__}:Backoff")


@pytest.mark.parametrize("name", ["retry_delay", "max_retry_delay"])
# 1e12: capped at 100 years; a Fraction stands for any numbers.Real (numpy's int64 too)
@pytest.mark.parametrize("value", [None, 0, 0.0, 30, 2.5, 1e12, Fraction(5, 2)])
def test_backoff_delays_in_seconds_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: object
) -> None:
    assert resolve_with(monkeypatch, name, value) is Backoff


@pytest.mark.parametrize("name", ["retry_delay", "max_retry_delay"])
@pytest.mark.parametrize(
    "value",
    ["30s", "30", -5, -0.1, float("nan"), float("inf"), 10**400, True,
     Decimal("30"), [30]],
)  # fmt: skip
def test_a_class_with_a_bad_backoff_delay_is_an_invalid_ref(
    monkeypatch: pytest.MonkeyPatch, name: str, value: object
) -> None:
    """The runner reads them after each death: a bad one failed there at every run, the
    task stuck for ever. The ref is refused, naming the class and the attribute."""
    with pytest.raises(InvalidRef) as caught:
        resolve_with(monkeypatch, name, value)
    message = str(caught.value)
    assert message.startswith(f"action ref '{__name__}:Backoff': Backoff.{name} = ")
    assert "expected a number of seconds >= 0 (finite), or None" in message and "\n" not in message


@pytest.mark.parametrize("value", [None, 1, 1000])
def test_max_attempts_accepted(monkeypatch: pytest.MonkeyPatch, value: object) -> None:
    assert resolve_with(monkeypatch, "max_attempts", value) is Backoff


@pytest.mark.parametrize("value", [0, -1, 2.0, "3", True, float("nan")])
def test_a_class_with_a_bad_max_attempts_is_an_invalid_ref(
    monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    with pytest.raises(InvalidRef, match=r"Backoff\.max_attempts = .*: expected a whole number"):
        resolve_with(monkeypatch, "max_attempts", value)


def test_the_builtin_actions_are_valid() -> None:
    registry = Registry(entry_points=False)
    for ref in ("bgtaskex.builtin.retention:PurgeRows", "bgtaskex.examples:CountPrimes"):
        registry.resolve(ref)


def test_a_class_added_to_a_module_after_it_was_loaded_waits_for_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy adds a class to a module the daemon has loaded, and the shell's enqueue
    (a fresh process) accepts it. The daemon's runs hold the old module: the action
    used to fail at once (InvalidRef), and the chain went on without it. Now the task
    waits (ModuleUnavailable: left as it is, exit 6) for the restart the message asks for.
    A class missing from a module loaded fresh is still an invalid ref."""
    (tmp_path / "deployed_jobs.py").write_text(
        "from bgtaskex import Action\n\nclass Old(Action):\n"
        "    def execute(self, deadline: float) -> bool:\n        return True\n"
    )
    before = time.time() - 3600  # written before this process loaded bgtaskex
    os.utime(tmp_path / "deployed_jobs.py", (before, before))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "deployed_jobs", raising=False)
    registry = Registry(["deployed_jobs"])
    registry.resolve("deployed_jobs:Old")
    with pytest.raises(InvalidRef, match="has no 'New'") as fresh:
        registry.resolve("deployed_jobs:New")  # the file has not changed since
    assert not isinstance(fresh.value, ModuleUnavailable)
    source = tmp_path / "deployed_jobs.py"
    source.write_text(source.read_text() + "\nclass New(Old):\n    pass\n")
    later = time.time() + 5
    os.utime(source, (later, later))
    with pytest.raises(ModuleUnavailable, match="restart the daemon") as stale:
        registry.resolve("deployed_jobs:New")
    assert stale.value.module == "deployed_jobs"
    del sys.modules["deployed_jobs"]  # a fresh process: the new class is there
    assert Registry(["deployed_jobs"]).resolve("deployed_jobs:New").__name__ == "New"
