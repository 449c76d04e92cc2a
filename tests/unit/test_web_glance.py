"""The overview's headline (`web.glance`): what `check` leaves out (a task failed, a
queue paused, tasks running) in words and symbols beside the verdict, and the verdict
itself as `bgtaskex check` gives it, without the failed tasks of the headline."""

from __future__ import annotations

from datetime import UTC, datetime

from bgtaskex.health import Health
from bgtaskex.models import QueuePause
from bgtaskex.web.glance import FAILED_WITHIN, glance


def test_a_failed_task_and_a_paused_queue_show_beside_an_ok_check() -> None:
    paused = QueuePause("reports", datetime.now(UTC), "maintenance")
    health = Health(
        3600.0, failed_within=FAILED_WITHIN, failed_recently=1, failed_ids=(7,), paused=(paused,)
    )
    seen = glance(health, running=2)
    assert seen.problems == ()  # check without --failed-within: OK
    assert [(i.level, i.icon, i.text) for i in seen.items] == [
        ("ok", "✔", "Runs healthy, nothing stuck"),
        ("bad", "✖", "1 task failed in the last 24 h"),
        ("warn", "‖", "queue reports paused"),
        ("run", "▶", "2 tasks running"),
    ]
    assert seen.items[1].path == "/tasks" and seen.items[1].query == {"status": "failed"}
    assert seen.level == "bad"
    assert "paused queue(s): reports" in seen.notes


def test_a_problem_of_check_is_counted_in_the_headline_and_listed() -> None:
    health = Health(60.0, stuck=2, stuck_ids=(1, 2), failed_within=FAILED_WITHIN)
    seen = glance(health, running=0)
    assert len(seen.problems) == 1 and seen.problems[0].startswith("2 task(s) stuck")
    assert [(i.icon, i.text) for i in seen.items] == [("⚠", "1 problem needs a look (below)")]
    assert seen.level == "bad"


def test_all_quiet() -> None:
    seen = glance(Health(60.0, waiting=0, failed_within=FAILED_WITHIN, failed_recently=0), 0)
    assert seen.level == "ok" and len(seen.items) == 1 and seen.problems == ()


def test_a_costly_overview_refreshes_less_often() -> None:
    from bgtaskex.web.pages import refresh_seconds

    assert refresh_seconds(0.01) == 2  # a small database: every 2 s
    assert refresh_seconds(0.46) == 5  # 1,000,000 tasks on SQLite: a tenth of the time
    assert refresh_seconds(30.0) == 60  # never less often than once a minute
