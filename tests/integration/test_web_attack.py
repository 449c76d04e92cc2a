"""Regressions found by attacking the dashboard as an operator's accidents and a
hostile page would (see the webattack notes): each test fails without its fix."""

from __future__ import annotations

from pathlib import Path

from bgtaskex.client import connect
from bgtaskex.config import Settings
from tests.support.web import close, csrf_of, error_of, flash_of, make_web


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_an_sqlite_file_deleted_or_replaced_under_the_web_is_reopened(tmp_path: Path) -> None:
    """Deleted: an action is refused (no schema), not written into the deleted file;
    replaced (restored from a backup, a fresh one): the pages show the file there now,
    and an action lands in it."""
    path = tmp_path / "web.db"
    web = make_web(f"sqlite:///{path}", tmp_path)
    try:
        old = web.waiting_task("old-one")
        assert "old-one" in web.http.get("/tasks").text  # the shared client is open
        web.client.close()
        _remove(path)
        token = csrf_of(web.http.get("/").text)
        paused = web.http.post("/queues/lost/pause", data={"csrf_token": token})
        assert (flash_of(paused.text) or "").startswith("refused: the database has no bgtaskex")
        assert "old-one" not in web.http.get("/tasks").text
        settings = Settings(database_url=f"sqlite:///{path}", imports=("tests.scripted",))
        with connect(settings=settings) as fresh:
            new = fresh.enqueue("new-one", [("tests.scripted:Scripted", {"log": web.log})])
            assert new == old  # a new file: ids start again
            listed = web.http.get("/api/tasks").json()["tasks"]
            assert [t["name"] for t in listed] == ["new-one"]
            token = csrf_of(web.http.get("/").text)
            web.http.post("/queues/kept/pause", data={"csrf_token": token})
            assert [p.queue for p in fresh.paused_queues()] == ["kept"]
    finally:
        close(web)


def test_a_filter_no_name_could_hold_is_bad_input_not_a_database_down(
    db_url: str, tmp_path: Path
) -> None:
    """A NUL in a filter reached PostgreSQL, which refused it: a 503 "the database is
    unavailable"; a name glob of 55,000 `*` reached SQLite, "pattern too complex": the
    same. Both are the request's fault: 400 and one line."""
    web = make_web(db_url, tmp_path)
    try:
        web.waiting_task()
        for path, words in (
            ("/tasks?queue=%00", "queue must be text of at most 100 characters"),
            ("/tasks?name=a%00", "name glob must be text of at most 1000 characters"),
            ("/tasks?name=" + "*" * 55_000, "name glob must be text of at most 1000"),
            ("/runs?process=%00", "process must be text of at most 200 characters"),
            ("/tasks/bulk?action=cancel&queue=" + "q" * 101, "queue must be text"),
        ):
            page = web.http.get(path)
            assert page.status_code == 400, (path[:40], page.status_code, error_of(page.text))
            assert words in (error_of(page.text) or ""), path[:40]
        answer = web.http.post(
            "/api/tasks/cancel",
            json={"expect": 1, "queue": "\0"},
            headers={"X-CSRF-Token": web.csrf()},
        )
        assert answer.status_code == 400, answer.text
        assert web.http.get("/api/runs", params={"process": "\x1b[2J"}).status_code == 400
        assert (
            web.http.get("/tasks", params={"name": "wait*", "queue": "default"}).status_code == 200
        )
    finally:
        close(web)
