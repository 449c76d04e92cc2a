"""Who may come in: the ASGI middleware that reads the session cookie of every request
(issuing an anonymous session when there is none), lets in only a logged-in session
when `web_token` is set (or, on the API, `Authorization: Bearer <token>`), and hands the
page the one-time flash message. State-changing requests are checked by `post_guard`
(read-only, same origin, CSRF) before the endpoint runs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import Response

from .security import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    FLASH_COOKIE,
    SESSION_SECONDS,
    ASGIApp,
    Guard,
    Message,
    Receive,
    Scope,
    Send,
    same_origin,
)

if TYPE_CHECKING:
    from .html import Pages

#: Paths (from the root) anyone may fetch: the login page and the static files.
PUBLIC = ("/login", "/static/")


def _route(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


class Gate:
    """The session of each request in `scope["bgtaskex.session"]`; a visitor without
    the right to look is sent to the login page (the API answers 401)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = cookie_parser(headers.get("cookie", ""))
        guard = self.guard
        session = guard.read_session(cookies.get(COOKIE))
        set_cookies: list[str] = []
        secure = scope.get("scheme") == "https"
        if session is None:
            session, value = guard.new_session(authenticated=False)
            set_cookies.append(guard.cookie(COOKIE, value, secure=secure, max_age=SESSION_SECONDS))
        scope["bgtaskex.session"] = session
        flash = guard.read_flash(cookies.get(FLASH_COOKIE))
        if FLASH_COOKIE in cookies:
            scope["bgtaskex.flash"] = flash
            set_cookies.append(guard.cookie(FLASH_COOKIE, "", secure=secure, max_age=0))
        route = _route(scope)
        bearer = self._bearer(headers)
        scope["bgtaskex.bearer"] = bearer
        if not (guard.allowed(session) or bearer or route.startswith(PUBLIC)):
            await self._refuse(scope, receive, send, route, set_cookies)
            return

        async def with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start" and set_cookies:
                headers = list(message.get("headers", []))
                # the endpoint's own cookie wins (a login's new session)
                theirs = {v.split(b"=", 1)[0] for k, v in headers if k.lower() == b"set-cookie"}
                headers += [
                    (b"set-cookie", cookie.encode("latin-1"))
                    for cookie in set_cookies
                    if cookie.split("=", 1)[0].encode() not in theirs
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_cookies)

    def _bearer(self, headers: Headers) -> bool:
        """Whether the request carries the token itself (`Authorization: Bearer ...`):
        for scripts on the API; such a request needs no CSRF token (a browser never
        adds this header by itself)."""
        kind, _, given = headers.get("authorization", "").partition(" ")
        return kind.lower() == "bearer" and bool(given) and self.guard.token_matches(given)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, route: str, cookies: list[str]
    ) -> None:
        root = scope.get("root_path", "").rstrip("/")
        response: Response
        if route.startswith("/api/"):
            body = {
                "error": "log in first: POST the token to /login, or send it as "
                "'Authorization: Bearer <token>'"
            }
            response = Response(json.dumps(body), status_code=401, media_type="application/json")
            response.headers["www-authenticate"] = 'Bearer realm="bgtaskex"'
        else:
            target = route + (
                "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
            )
            response = Response(status_code=303)
            response.headers["location"] = f"{root}/login?next={quote(target, safe='')}"
        for cookie in cookies:
            response.headers.append("set-cookie", cookie)
        await response(scope, receive, send)


Endpoint = Callable[[Request], Awaitable[Response]]


def post_guard(pages: Pages, *, allow_read_only: bool = False) -> Callable[[Endpoint], Endpoint]:
    """Wrap a POST endpoint: refused with 403 and one line, before it runs, in
    read-only mode (unless `allow_read_only`: login, logout), from another origin, or
    without this session's CSRF token (the form field `csrf_token` or the header
    `X-CSRF-Token`; a request with the bearer token needs none)."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def guarded(request: Request) -> Response:
            refusal = await _refusal(request, pages.guard, allow_read_only)
            if refusal is not None:
                return _forbidden(request, pages, refusal)
            return await endpoint(request)

        return guarded

    return wrap


async def _refusal(request: Request, guard: Guard, allow_read_only: bool) -> str | None:
    if guard.read_only and not allow_read_only:
        return "the dashboard is read-only (bgtaskex web --read-only): nothing can be changed here"
    if request.scope.get("bgtaskex.bearer"):
        return None
    if not same_origin(request.headers, request.headers.get("host")):
        return "refused: this request comes from another site (Origin or Referer)"
    given = request.headers.get(CSRF_HEADER)
    if given is None and _is_form(request):
        form = await request.form()
        field = form.get(CSRF_FIELD)
        given = field if isinstance(field, str) else None
    if not guard.csrf_ok(request.scope.get("bgtaskex.session"), given):
        return (
            "refused: missing or wrong CSRF token (reload the page and try again; "
            "scripts: send X-CSRF-Token, see GET /api/csrf)"
        )
    return None


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def _forbidden(request: Request, pages: Pages, message: str) -> Response:
    if _route(request.scope).startswith("/api/"):
        return Response(
            json.dumps({"error": message}), status_code=403, media_type="application/json"
        )
    return pages.response(request, "error.html", 403, message=message, title="Forbidden")


def wants_json(request: Request) -> bool:
    return _route(request.scope).startswith("/api/")


__all__ = ["PUBLIC", "Gate", "post_guard", "wants_json"]
