"""The dashboard's defences, each refusal tried for real (Starlette's TestClient over
the real app and an SQLite file): security headers on every response, a CSRF token on
every POST (none, a wrong one, another session's, another origin's), read-only, the
login by token and its session cookie, secrets masked in pages and the API, links
under the root path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route

from bgtaskex.web.security import CSP
from tests.support.web import TOKEN, Web, close, csrf_of, error_of, make_web


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    found = make_web(f"sqlite:///{tmp_path / 'web.db'}", tmp_path)
    yield found
    close(found)


def _post_paths(web: Web, task_id: int) -> list[str]:
    """Every POST route of the app, its path parameters filled in."""
    fill = {"task_id": str(task_id), "queue": "default", "name": "nosuchrule"}
    found = []
    for route in web.app.starlette.routes:
        if isinstance(route, Route) and route.methods and "POST" in route.methods:
            path = route.path
            for key, value in fill.items():
                path = re.sub(r"\{" + key + r"(:\w+)?\}", value, path)
            found.append(path)
    assert "{" not in "".join(found), found
    return found


GET_PATHS = [
    "/",
    "/tasks",
    "/tasks?status=failed",
    "/tasks/1",
    "/tasks/bulk?action=cancel",
    "/processes",
    "/rules",
    "/runs",
    "/login",
    "/static/style.css",
    "/static/app.js",
    "/static/vendor/htmx.min.js",
    "/api/stats",
    "/api/tasks",
    "/api/tasks/1",
    "/api/tasks/1/events",
    "/api/queues",
    "/api/runs",
    "/api/processes",
    "/api/rules",
    "/api/check",
    "/api/activity",
    "/api/csrf",
    "/tasks/999",  # 404
    "/tasks/x",  # 400
    "/tasks?status=nope",  # 400
    "/no/such/page",  # 404
]


def _headers_ok(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"


def test_every_response_has_the_security_headers(web: Web) -> None:
    web.failed_task()
    for path in GET_PATHS:
        response = web.http.get(path)
        _headers_ok(response)
        if not path.startswith("/static/"):
            assert response.headers["cache-control"] == "no-store", path
    for path in _post_paths(web, 1):
        _headers_ok(web.http.post(path))


def test_no_inline_script_or_style_in_any_page(web: Web) -> None:
    """The CSP forbids them: a page that relied on one would break in the browser."""
    web.failed_task()
    for path in [p for p in GET_PATHS if not p.startswith(("/api/", "/static/"))]:
        html = web.http.get(path).text
        assert "style=" not in html, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\son[a-z]+=", html), path
        assert "http://" not in html and "https://" not in html, path  # no CDN, no host


def test_every_post_without_csrf_is_refused(web: Web) -> None:
    task_id = web.failed_task()
    paths = _post_paths(web, task_id)
    assert len(paths) >= 12, paths
    for path in paths:
        if path in ("/login", "/logout"):
            continue
        response = web.http.post(path, data={"reason": "x"})
        assert response.status_code == 403, path
        said = response.json()["error"] if path.startswith("/api/") else error_of(response.text)
        assert said is not None and "CSRF" in said, (path, said)
    assert web.client.get(task_id).status == "failed"  # nothing was retried
    assert web.client.paused_queues() == []


def test_a_wrong_csrf_token_or_another_sessions_is_refused(web: Web, tmp_path: Path) -> None:
    task_id = web.failed_task()
    for token in ["0" * 64, "", "x"]:
        response = web.http.post(f"/tasks/{task_id}/retry", data={"csrf_token": token})
        assert response.status_code == 403
        response = web.http.post(
            f"/api/tasks/{task_id}/retry", headers={"X-CSRF-Token": token or "-"}
        )
        assert response.status_code == 403
    other = web.http.__class__(web.app)  # another browser: another session, another token
    theirs = csrf_of(other.get("/").text)
    assert theirs != web.csrf()
    response = web.http.post(f"/tasks/{task_id}/retry", data={"csrf_token": theirs})
    assert response.status_code == 403
    assert web.client.get(task_id).status == "failed"
    # the right one goes through, as a form field and as the htmx header
    response = web.post(f"/tasks/{task_id}/retry")
    assert response.status_code == 200 and web.client.get(task_id).status != "failed"


def test_a_post_from_another_origin_is_refused_even_with_the_token(web: Web) -> None:
    task_id = web.failed_task()
    token = web.csrf()
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
    ):
        response = web.http.post(
            f"/tasks/{task_id}/retry", data={"csrf_token": token}, headers=headers
        )
        assert response.status_code == 403, headers
        assert "another site" in (error_of(response.text) or "")
    assert web.client.get(task_id).status == "failed"
    ok = web.http.post(
        f"/tasks/{task_id}/retry",
        data={"csrf_token": token},
        headers={"Origin": "http://testserver"},
    )
    assert ok.status_code == 200 and web.client.get(task_id).status != "failed"


def test_read_only_shows_no_button_and_refuses_every_post(tmp_path: Path) -> None:
    web = make_web(f"sqlite:///{tmp_path / 'ro.db'}", tmp_path, read_only=True)
    try:
        task_id = web.failed_task()
        web.client.pause("default", "for the test")
        for path in ["/", "/tasks", f"/tasks/{task_id}", "/tasks?status=failed", "/rules"]:
            html = web.http.get(path).text
            assert "data-action" not in html, path  # every button that changes something
            assert 'method="post"' not in html, path
            assert "read-only" in html
        assert "bulk-retry" not in web.http.get("/tasks").text
        token = web.csrf()
        for path in _post_paths(web, task_id):
            if path in ("/login", "/logout"):
                continue
            response = web.http.post(path, data={"csrf_token": token})
            assert response.status_code == 403, path
            text = response.text if not path.startswith("/api/") else response.json()["error"]
            assert "read-only" in text, path
        assert web.client.get(task_id).status == "failed"
        assert [p.queue for p in web.client.paused_queues()] == ["default"]
    finally:
        close(web)


def _cookie(response: object, name: str) -> str:
    found = [
        value
        for key, value in response.headers.multi_items()  # type: ignore[attr-defined]
        if key == "set-cookie" and value.startswith(name + "=")
    ]
    assert found, response.headers  # type: ignore[attr-defined]
    return found[-1]


def test_the_token_login_and_its_session_cookie(tmp_path: Path) -> None:
    web = make_web(f"sqlite:///{tmp_path / 'tok.db'}", tmp_path, web_token=TOKEN)
    try:
        http = web.http
        # no session: the pages send to the login, the API answers 401
        first = http.get("/tasks?status=failed", follow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=%2Ftasks%3Fstatus%3Dfailed"
        assert http.get("/api/stats").status_code == 401
        assert http.get("/static/style.css").status_code == 200  # the login page needs it
        # a wrong token
        page = http.get("/login")
        wrong = http.post("/login", data={"csrf_token": csrf_of(page.text), "token": "nope"})
        assert wrong.status_code == 403 and 'data-testid="login-error"' in wrong.text
        assert http.get("/", follow_redirects=False).status_code == 303
        # without the login form's CSRF token
        assert http.post("/login", data={"token": TOKEN}).status_code == 403
        # the right one
        ok = http.post(
            "/login",
            data={"csrf_token": csrf_of(page.text), "token": TOKEN, "next": "/runs"},
            follow_redirects=False,
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/runs"
        cookie = _cookie(ok, "bgtaskex_session")
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert {"httponly", "samesite=strict", "path=/"} <= set(flags)
        assert "secure" not in flags  # plain http here
        assert TOKEN not in cookie
        assert http.get("/").status_code == 200
        assert http.get("/api/stats").status_code == 200
        # logging out ends it
        http.post("/logout", data={"csrf_token": csrf_of(http.get("/").text)})
        assert http.get("/", follow_redirects=False).status_code == 303
    finally:
        close(web)


def test_the_cookie_is_secure_over_https_and_a_login_goes_nowhere_else(tmp_path: Path) -> None:
    web = make_web(
        f"sqlite:///{tmp_path / 'tls.db'}", tmp_path, web_token=TOKEN, base_url="https://testserver"
    )
    try:
        assert "secure" in _cookie(web.http.get("/login"), "bgtaskex_session").lower()
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            page = web.http.get("/login")
            ok = web.http.post(
                "/login",
                data={"csrf_token": csrf_of(page.text), "token": TOKEN, "next": target},
                follow_redirects=False,
            )
            assert ok.status_code == 303 and ok.headers["location"] == "/", target
            flags = [p.strip().lower() for p in _cookie(ok, "bgtaskex_session").split(";")]
            assert "secure" in flags
    finally:
        close(web)


def test_a_bearer_token_opens_the_api_to_scripts(tmp_path: Path) -> None:
    web = make_web(f"sqlite:///{tmp_path / 'bearer.db'}", tmp_path, web_token=TOKEN)
    try:
        task_id = web.failed_task()
        assert (
            web.http.get("/api/stats", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert web.http.get("/api/stats", headers=auth).status_code == 200
        # no CSRF needed: a browser never sends this header by itself
        done = web.http.post(f"/api/tasks/{task_id}/retry", headers=auth)
        assert done.status_code == 200 and done.json()["status"] == "created"
    finally:
        close(web)


def test_a_session_does_not_survive_a_restart_or_a_changed_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    web = make_web(url, tmp_path, web_token=TOKEN)
    page = web.http.get("/login")
    web.http.post("/login", data={"csrf_token": csrf_of(page.text), "token": TOKEN})
    cookie = web.http.cookies["bgtaskex_session"]
    assert web.http.get("/", follow_redirects=False).status_code == 200
    close(web)
    for token in (TOKEN, TOKEN + "-changed"):  # a restart; a new token
        again = make_web(url, tmp_path, web_token=token)
        try:
            again.http.cookies.set("bgtaskex_session", cookie)
            assert again.http.get("/", follow_redirects=False).status_code == 303
        finally:
            close(again)
    forged = make_web(url, tmp_path, web_token=TOKEN)
    try:
        sid, _auth, expires, mac = cookie.split(".")
        forged.http.cookies.set("bgtaskex_session", f"{sid}.1.{expires}.{'0' * len(mac)}")
        assert forged.http.get("/", follow_redirects=False).status_code == 303
    finally:
        close(forged)


SECRET_PARAMS = {
    "password": "pw-value-1",
    "API_Key": "pw-value-2",
    "nested": {"accessToken": "pw-value-3", "rows": [{"client_secret": "pw-value-4"}]},
    "dsn": "postgresql://app:pw-value-5@db/app",
    "visible": "plain-value",
}


def test_secret_params_are_masked_in_pages_and_the_api(tmp_path: Path) -> None:
    for show in (False, True):
        web = make_web(f"sqlite:///{tmp_path / f'{show}.db'}", tmp_path, web_show_secrets=show)
        try:
            task_id = web.waiting_task(**SECRET_PARAMS)
            failed = web.failed_task(**SECRET_PARAMS)
            outputs = [
                web.http.get(f"/tasks/{task_id}").text,
                web.http.get(f"/api/tasks/{task_id}").text,
                web.http.get("/api/tasks").text,
                web.post(f"/api/tasks/{failed}/retry").text,
            ]
            for text in outputs:
                assert "plain-value" in text
                for n in range(1, 5):
                    assert (f"pw-value-{n}" in text) is show, (n, show, text[:3000])
                assert "pw-value-5" not in text  # a URL's password: masked always
        finally:
            close(web)


def test_the_token_is_masked_in_the_settings_and_their_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgtaskex.config import load_settings
    from bgtaskex.exceptions import ConfigError

    settings = load_settings(None, {"web_token": TOKEN}, environ={})
    assert settings.web_token == TOKEN and TOKEN not in repr(settings)
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={"BGTASKEX_WEB_TOKEN": "short-secret"})
    assert "short-secret" not in str(err.value) and "BGTASKEX_WEB_TOKEN" in str(err.value)


def test_every_link_and_form_respects_the_root_path(tmp_path: Path) -> None:
    """Behind a proxy that strips /bgtaskex, uvicorn (--root-path) passes the full path
    on; the browser asks for /bgtaskex/..., and the cookie is sent there only."""
    web = make_web(f"sqlite:///{tmp_path / 'root.db'}", tmp_path, root_path="/bgtaskex")
    try:
        task_id = web.failed_task()
        web.waiting_task(queue="reports")
        first = web.http.get("/bgtaskex/tasks")
        assert first.status_code == 200
        assert "path=/bgtaskex;" in _cookie(first, "bgtaskex_session").lower()
        for path in ["/", "/tasks", f"/tasks/{task_id}", "/processes", "/runs", "/rules"]:
            html = web.http.get("/bgtaskex" + path).text
            targets = re.findall(r'(?<![\w-])(?:href|action|src|hx-get)="([^"#][^"]*)"', html)
            assert targets, path
            outside = [t for t in targets if not t.startswith("/bgtaskex/")]
            assert outside == [], (path, outside)
        token = web.csrf("/bgtaskex/")
        done = web.http.post(
            f"/bgtaskex/tasks/{task_id}/retry", data={"csrf_token": token}, follow_redirects=False
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/bgtaskex/tasks/{task_id}"
    finally:
        close(web)
