"""Text a backend cannot store as it is, in what a run writes of an action's failure: a
NUL (PostgreSQL refuses it in text) and a lone surrogate (it has no UTF-8). A run must
record the failure, escaped, instead of failing on its own write at every run."""

from __future__ import annotations

from typing import Any

import pytest

from bgtaskex import Action
from bgtaskex.client import connect
from bgtaskex.config import Settings, params_problem
from bgtaskex.exceptions import UsageError
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


class SavesNul(Action):
    def execute(self, deadline: float) -> bool:
        self.params["x"] = "a\x00b"
        return False


def test_params_left_with_a_nul_are_a_hook_error_not_a_storage_error(settings: Settings) -> None:
    """PostgreSQL refuses a NUL in JSON: such params left by a hook used to fail the run's
    flush in the database, at every run (exit 4), and starve the tasks behind it. They are
    the action's error now, on every backend, and the next task runs."""
    with connect(settings=_settings(settings)) as client:
        task_id = client.enqueue("nul", [(f"{__name__}:SavesNul", {"kept": 1})])
        other = client.enqueue("other", [("tests.scripted:Noop", {})])
        client.run_once()
        assert client.get(other).status is TaskStatus.FINISHED
        client.run_once()  # the death found, past max_attempts=1: the action fails
        task = client.get(task_id)
        assert task.status is TaskStatus.FAILED and task.actions[0].params == {"kept": 1}
        assert "cannot be stored: a string holds a NUL character" in (
            task.actions[0].last_failure or ""
        )


@pytest.mark.parametrize("params", [{"x": "a\x00b"}, {"a\x00": 1}, {"x": ["caf\udce9"]}])
def test_params_that_cannot_be_stored_are_refused_at_enqueue(
    settings: Settings, params: dict[str, Any]
) -> None:
    with connect(settings=_settings(settings)) as client, pytest.raises(UsageError) as refused:
        client.enqueue("odd", [("tests.scripted:Noop", params)])
    assert "cannot be stored: a string holds a" in str(refused.value)
    assert "caf" not in str(refused.value)  # the value is not shown: it may be a secret


@pytest.mark.parametrize(
    "params", [{"x": "\\u0000 as text"}, {"x": "😀 é"}, {"nested": [{"k": "v"}, 1, None]}]
)
def test_params_that_only_look_odd_are_taken(params: dict[str, Any]) -> None:
    assert params_problem(params) is None
