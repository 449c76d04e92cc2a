from __future__ import annotations

import pytest

from bgtaskex import Action
from bgtaskex.examples import CountPrimes
from bgtaskex.exceptions import InvalidRef
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
