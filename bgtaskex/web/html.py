"""The dashboard's HTML: the Jinja2 environment (autoescaped), its filters, and how a
page is rendered with what every page needs (links under the root path, the CSRF token,
read-only, the flash message)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2

from .. import render as text
from ..render_ops import run_count_items
from ..urls import mask_secrets
from .security import COOKIE, FLASH_COOKIE

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from .security import Guard

TEMPLATES = Path(__file__).parent / "templates"

#: A status as a symbol besides its word, so that it reads without colour.
ICONS = {
    "finished": "✔",
    "done": "✔",
    "ok": "✔",
    "failed": "✖",
    "died": "✖",
    "refused": "✖",
    "storage": "✖",
    "cancelled": "⊘",
    "running": "▶",
    "starting": "▶",
    "active": "▶",
    "recovering": "↻",
    "paused": "‖",  # not U+23F8: common fonts (DejaVu) lack it
    "created": "○",
    "pending": "○",
    "skipped": "↷",
}


def _utc(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def _ago(value: datetime | None) -> str:
    return text.ago(value) if value else "-"


def _number(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        utc=_utc,
        iso=_iso,
        ago=_ago,
        number=_number,
        duration=text.duration,
        seconds=text.seconds_text,
        pretty=_pretty,
        masked=mask_secrets,
        icon=lambda status: ICONS.get(str(status), "•"),
        part=lambda value: quote(str(value), safe=""),
    )
    env.globals.update(
        run_count_items=run_count_items, rate_text=text.rate_text, eta_text=text.eta_text
    )
    return env


class Pages:
    """Renders templates for one app: links under the root path, the session's CSRF
    token, read-only, the flash message of the last action."""

    def __init__(self, guard: Guard, *, root_path: str) -> None:
        self.env = environment()
        self.guard = guard
        self.root = root_path.rstrip("/")

    def url(self, path: str, **query: Any) -> str:
        """`path` (from the app's root, `/tasks/3`) under the root path, with `query`
        (None values and empty lists left out; lists repeat the key)."""
        items: list[tuple[str, str]] = []
        for key, value in query.items():
            for one in value if isinstance(value, list | tuple) else [value]:
                if one is not None and one != "":
                    items.append((key, str(one)))
        return self.root + path + ("?" + urlencode(items) if items else "")

    def html(self, request: Request, template: str, status: int = 200, **context: Any) -> str:
        session = request.scope.get("bgtaskex.session")
        values = {
            "url": self.url,
            "read_only": self.guard.read_only,
            "login_required": self.guard.login_required,
            "csrf": self.guard.csrf_token(session) if session is not None else "",
            "flash": request.scope.get("bgtaskex.flash"),
            "here": self._here(request),
            "status_code": status,
            **context,
        }
        return self.env.get_template(template).render(values)

    def _here(self, request: Request) -> str:
        """This page's URL from the host: what its live parts poll."""
        path: str = request.scope.get("path", "")
        scope_root: str = request.scope.get("root_path", "")
        if scope_root and path.startswith(scope_root + "/"):
            path = path[len(scope_root) :]
        query = request.url.query
        return self.root + path + ("?" + query if query else "")

    def response(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        from starlette.responses import HTMLResponse

        return HTMLResponse(self.html(request, template, status, **context), status_code=status)

    def redirect(self, request: Request, path: str, flash: str | None = None) -> Response:
        """See Other to `path` (from the root), with a one-time message for the page."""
        from starlette.responses import RedirectResponse

        response = RedirectResponse(self.url(path), status_code=303)
        if flash:
            secure = request.url.scheme == "https"
            value = self.guard.sign_flash(flash[:1000])
            cookie = self.guard.cookie(FLASH_COOKIE, value, secure=secure, max_age=60)
            response.headers.append("set-cookie", cookie)
        return response


__all__ = ["COOKIE", "ICONS", "Pages", "environment"]
