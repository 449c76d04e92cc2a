"""The dashboard in tests: the real app (`bgtaskex.web.app.create_app`) over a real
database, driven by Starlette's TestClient (httpx, in this process); and helpers to read
its pages (the CSRF token, the flash message, the error line) and to make tasks in the
states the pages show."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")

from starlette.testclient import TestClient

from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from bgtaskex.web.app import Dashboard, create_app

#: A token long enough for the setting (16 characters at least).
TOKEN = "t0ken-for-the-dashboard-tests"


@dataclass
class Web:
    """A dashboard and a client of its database (to make tasks, and to look)."""

    settings: Settings
    client: Client
    app: Dashboard
    http: TestClient
    log: str
    opened: list[Client] = field(default_factory=list)

    def csrf(self, path: str = "/") -> str:
        """The CSRF token the page at `path` gives this session."""
        return csrf_of(self.http.get(path).text)

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        """A form POST with this session's CSRF token."""
        return self.http.post(path, data={"csrf_token": self.csrf(), **(data or {})}, **kw)

    def failed_task(self, name: str = "bad", **params: Any) -> int:
        """A task whose action failed (its execute raised up to max_attempts)."""
        plan = {"execute": ["raise"]}
        ref = ("tests.scripted:Scripted", {"log": self.log, "name": name, "plan": plan, **params})
        task_id = self.client.enqueue(name, [ref])
        for _ in range(self.settings.max_attempts + 2):
            if self.client.get(task_id).status == "failed":
                break
            self.client.run_once()
        assert self.client.get(task_id).status == "failed"
        return task_id

    def waiting_task(self, name: str = "waits", queue: str = "default", **params: Any) -> int:
        ref = ("tests.scripted:Scripted", {"log": self.log, "name": name, **params})
        return self.client.enqueue(name, [ref], queue=queue)


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', html)
    assert found, html[:500]
    return found[1]


def flash_of(html: str) -> str | None:
    found = re.search(r'data-testid="flash">([^<]*)<', html)
    return unescape(found[1]) if found else None


def error_of(html: str) -> str | None:
    found = re.search(r'data-testid="error"[^>]*>([^<]*)<', html)
    return unescape(found[1]) if found else None


def make_web(
    url: str,
    tmp_path: Path,
    *,
    read_only: bool = False,
    root_path: str = "",
    base_url: str = "http://testserver",
    **settings: Any,
) -> Web:
    base = Settings(
        database_url=url,
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted",),
        retry_delay=0.0,
        max_attempts=2,
    )
    chosen = base._replace(**settings)
    client = connect(settings=chosen)
    opened: list[Client] = []

    def factory() -> Client:
        found = connect(settings=chosen, trust_refs=False, create=False)
        opened.append(found)
        return found

    app = create_app(factory, chosen, read_only=read_only, root_path=root_path)
    http = TestClient(app, base_url=base_url, root_path=root_path, follow_redirects=True)
    return Web(chosen, client, app, http, str(tmp_path / "hooks.log"), opened)


def close(found: Web) -> None:
    found.http.close()
    found.client.close()
    for opened in found.opened:
        opened.close()
