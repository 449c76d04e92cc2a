"""Text a backend cannot store as it is, in what a run writes of an action's failure: a
NUL (PostgreSQL refuses it in text) and a lone surrogate (it has no UTF-8). A run must
record the failure, escaped, instead of failing on its own write at every run."""

from __future__ import annotations

from typing import Any

from bgtaskex import Action
from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.models import TaskStatus
from bgtaskex.store.statements import storable

ODD = "bad\x00byte, lone \ud800 surrogate"
#: An error is logged with its traceback too, and pytest-xdist cannot send a captured log
#: holding a lone surrogate back from its worker: the error's text holds a NUL only.
ODD_ERROR = "bad\x00byte"


class RaisesOddText(Action):
    def execute(self, deadline: float) -> bool:
        raise ValueError(ODD_ERROR)


class NotesOddText(Action):
    def execute(self, deadline: float) -> bool:
        self.note(f"note: {ODD}")
        self.progress(1, 2, f"progress: {ODD}")
        return True


def _settings(settings: Settings) -> Settings:
    return settings._replace(imports=(*settings.imports, __name__), max_attempts=1)


def test_an_error_text_with_a_nul_is_recorded(settings: Settings) -> None:
    with connect(settings=_settings(settings)) as client:
        task_id = client.enqueue("odd", [(f"{__name__}:RaisesOddText", {})])
        client.run_once()
        client.run_once()  # the death found, past max_attempts=1: the action fails
        task = client.get(task_id)
        assert task.status is TaskStatus.FAILED
        failure = task.actions[0].last_failure or ""
        assert "ValueError: bad\\x00byte" in failure
        errors = [e.error or "" for e in client.events(task_id)]
        assert any("bad\\x00byte" in error for error in errors)


def test_a_note_and_a_progress_message_with_a_nul_are_recorded(settings: Settings) -> None:
    with connect(settings=_settings(settings)) as client:
        task_id = client.enqueue("odd", [(f"{__name__}:NotesOddText", {})])
        summary: Any = client.run_once()
        assert summary.finished == 1
        messages = [e.message for e in client.events(task_id)]
        assert "note: bad\\x00byte, lone \ufffd surrogate" in messages
        progress = client.get(task_id).actions[0].progress
        assert (
            progress is not None
            and progress.message == "progress: bad\\x00byte, lone \ufffd surrogate"
        )


def test_storable_escapes_a_nul_and_replaces_a_lone_surrogate() -> None:
    assert storable(ODD) == "bad\\x00byte, lone \ufffd surrogate"
    assert storable("plain é ✓") == "plain é ✓"
