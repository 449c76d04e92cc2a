"""bgtaskex is installed from a checkout, not from a package index: no line of the
README, the example config or an error hint says `pip install bgtaskex...`, and the
driver hint names the checkout bgtaskex was installed from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bgtaskex.store import engine

ROOT = Path(__file__).resolve().parents[2]
#: `pip install bgtaskex`, `pip install 'bgtaskex[postgres]'`: a name for an index to resolve.
FROM_AN_INDEX = re.compile(r"pip3? install(?: -\S+)* ['\"]?bgtaskex\b")


def _shipped_text() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")]
    files += [*(ROOT / "config").iterdir(), *(ROOT / "systemd").iterdir()]
    return files + sorted((ROOT / "bgtaskex").rglob("*.py"))


def test_no_line_installs_from_a_package_index() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _shipped_text()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FROM_AN_INDEX.search(line)
    ]
    assert not found, "\n".join(found)
    assert FROM_AN_INDEX.search("pip install 'bgtaskex[postgres]'")
    assert not FROM_AN_INDEX.search("pip install '/path/to/bgtaskex[postgres]'")


def test_the_driver_hint_installs_from_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests run from an install of this checkout (README: pip install -e '.[test]').
    assert engine._checkout() == str(ROOT)
    monkeypatch.setitem(engine._EXTRAS, "postgresql", ("postgres", "nosuchdriver"))
    hint = engine._driver_hint(make_url("postgresql+nosuchdriver://app@db/app"))
    assert hint == f" (install its driver: pip install '{ROOT}[postgres]')"
