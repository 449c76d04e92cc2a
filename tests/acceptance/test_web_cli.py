"""`bgtaskex web` as a user runs it: a real uvicorn in a subprocess serving the pages
and the static files with their headers; bad --bind and --root-path values, and a
missing web extra, as one line and exit 2; and the helpers under it (masking, the week
timeline)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, quote_plus
from zoneinfo import ZoneInfo

import pytest

from bgtaskex.schedule import WeeklyWindow
from bgtaskex.web.charts import week_chart
from bgtaskex.web.masking import mask_params, secret_key
from tests.support.browser import free_port
from tests.support.cli import command, isolate, run_cli


def _get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()


def test_bgtaskex_web_serves_the_dashboard(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BGTASKEX_DATABASE_URL": f"sqlite:///{tmp_path / 'web.db'}",
    }
    args = command("web", "--bind", f"127.0.0.1:{port}", "--root-path", "/bgtaskex/")
    server = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, headers, body = _get(base + "/")
                break
            except (ConnectionError, urllib.error.URLError):
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "bgtaskex web did not answer in 30 s"
                time.sleep(0.1)
        assert status == 200 and "<title>Overview · bgtaskex</title>" in body
        assert 'href="/bgtaskex/tasks"' in body  # links under the root path
        assert headers["x-frame-options"] == "DENY" and "server" not in headers
        status, headers, body = _get(base + "/static/vendor/htmx.min.js")
        assert status == 200 and "htmx" in body[:2000]
        assert not (tmp_path / "web.db").exists()  # looking created no database
    finally:
        server.terminate()
        # uvicorn stops gracefully, then ends by the signal it caught (as systemd expects)
        assert server.wait(timeout=15) in (0, -15)
    log = server.stderr.read() if server.stderr else ""
    assert f"bgtaskex web on http://127.0.0.1:{port}/bgtaskex/" in log


def _wait_up(server: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _get(base + "/static/style.css")
            return
        except (ConnectionError, urllib.error.URLError):
            assert server.poll() is None, "bgtaskex web ended"
            assert time.monotonic() < deadline, "bgtaskex web did not answer in 30 s"
            time.sleep(0.1)


def test_a_token_pasted_in_a_url_is_not_accepted_nor_logged(tmp_path: Path) -> None:
    port, token = free_port(), "a-token/with+signs=and-more-words"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BGTASKEX_DATABASE_URL": f"sqlite:///{tmp_path / 'web.db'}",
        "BGTASKEX_WEB_TOKEN": token,
        "BGTASKEX_LOG_LEVEL": "INFO",  # the access log is on
    }
    args = command("web", "--bind", f"127.0.0.1:{port}")
    server = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_up(server, base)
        for path in (
            f"/api/stats?token={token}",
            f"/api/stats?token={quote(token, safe='')}",
            f"/tasks?token={quote_plus(token)}",
        ):
            status, _headers, body = _get(base + path)
            assert status == 401 or "Log in" in body, path  # not accepted
    finally:
        server.terminate()
        server.wait(timeout=15)
    log = server.stdout.read() if server.stdout else ""  # the access log is on stdout
    assert '"GET /api/stats?token=*** HTTP/1.1" 401' in log
    assert '"GET /api/stats?*** HTTP/1.1" 401' in log
    assert '"GET /login?*** HTTP/1.1" 200' in log  # the redirect's next
    for form in (token, quote(token, safe=""), quote_plus(token), "with%2Bsigns"):
        assert form not in log


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bind", "nowhere"], "--bind takes HOST:PORT"),
        (["--bind", "127.0.0.1:99999"], "--bind takes HOST:PORT"),
        (["--root-path", "bgtaskex"], "--root-path takes a path like /bgtaskex"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    args: list[str], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate(monkeypatch, tmp_path)
    result = run_cli("web", *args)
    assert result.code == 2, result.describe()
    assert result.err.count("\n") == 1 and words in result.err


def test_a_port_in_use_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate(monkeypatch, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("web", "--bind", f"127.0.0.1:{port}")
    assert result.code == 2, result.describe()
    assert result.err == (
        f"bgtaskex: error: --bind 127.0.0.1:{port}: cannot listen there: Address already in use\n"
    )
    result = run_cli("web", "--bind", "no-such-host.invalid:8787")
    assert result.code == 2 and result.err.startswith(
        "bgtaskex: error: --bind no-such-host.invalid:8787: cannot resolve"
    )
    assert result.err.count("\n") == 1


def test_a_missing_web_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    result = run_cli("web")
    assert result.code == 2
    assert result.err == (
        "bgtaskex: error: the web extra is not installed: pip install -e '.[web]'\n"
    )


def test_secret_looking_keys() -> None:
    for key in ("password", "DB_PASSWD", "apiKey", "api_key", "token", "x-secret", "key"):
        assert secret_key(key), key
    for key in ("keys", "monkey", "keyword", "name", "batch", "cursor"):
        assert not secret_key(key), key
    masked = mask_params({"a": [{"Token": 1}], "b": "mysql://u:p@h/d", "c": {"key": {"x": 1}}})
    assert masked == {"a": [{"Token": "***"}], "b": "mysql://u:***@h/d", "c": {"key": "***"}}


def test_the_week_timeline_shades_the_window_and_marks_now() -> None:
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 12, 9, 14, 0, tzinfo=paris)  # a Wednesday
    window = WeeklyWindow(["sun"], "01:00", "23:30")
    chart = week_chart(window, now, datetime(2026, 12, 13, 1, 0, tzinfo=paris), width=700)
    assert [s.text for s in chart.spans] == ["Sun 01:00-23:30"]
    assert chart.spans[0].x == pytest.approx(600 + 100 / 24, abs=0.01)
    assert chart.now_x == pytest.approx(200 + 100 * 14 / 24, abs=0.01)
    assert chart.next_x == chart.spans[0].x and not chart.is_open
    assert chart.summary.startswith("open Sun 01:00-23:30; now Wed 14:00, closed")
    crossing = WeeklyWindow("mon-sun", "22:00", "06:00")
    spans = week_chart(crossing, now, None).spans
    assert spans[0].x == 0 and len(spans) == 8  # Monday's early hours, then each night
