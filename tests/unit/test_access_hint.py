"""The hint of an SQLite file this user cannot open for writing (#15 attack: root
queued the first task, the database became root's with mode 0600, and the app user's
cron got "unable to open database file" with no reason). Tests run as root, whom
permissions never stop, so os.access answers as it would for another user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bgtaskex.store.engine import access_hint


def test_a_file_another_user_owns_is_named_with_its_owner_and_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "bgtaskex.db"
    db.write_bytes(b"")
    db.chmod(0o600)
    assert access_hint(db) == ""  # this user can: no hint
    monkeypatch.setattr(os, "access", lambda _path, _mode: False)
    hint = access_hint(db)
    assert hint.startswith(f"; {db} belongs to ")
    assert "(mode 0600): run bgtaskex as that user" in hint
    assert access_hint(tmp_path / "missing.db") == ""  # not there: SQLite makes it
    assert access_hint(None) == ""  # a server database
