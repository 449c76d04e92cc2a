"""The dashboard's application: `create_app` puts the routes (pages.py, api.py), the
static files, the gate (sessions, login), the error pages and the security headers
together over one Client."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from ..client import Client
from ..config import Settings
from ..exceptions import BgtaskexError, InvalidState, StorageError, TaskNotFound, UsageError
from ..urls import mask_secrets
from .clients import Clients
from .gate import Gate, wants_json
from .html import Pages
from .security import Guard, SecurityHeaders

log = logging.getLogger("bgtaskex.web")
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True, slots=True)
class Web:
    """What every endpoint reaches through `request.app.state.web`."""

    clients: Clients
    settings: Settings
    pages: Pages
    guard: Guard

    @property
    def show_secrets(self) -> bool:
        return self.settings.web_show_secrets


def web_of(request: Request) -> Web:
    found: Web = request.app.state.web
    return found


class Dashboard:
    """The ASGI application: Starlette's, wrapped in the security headers (outside its
    error middleware, so that every response has them); `starlette` is the inner app."""

    def __init__(self, starlette: Starlette) -> None:
        self.starlette = starlette
        self._app = SecurityHeaders(starlette)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def create_app(
    client_factory: Callable[[], Client],
    settings: Settings,
    *,
    read_only: bool = False,
    root_path: str = "",
) -> Dashboard:
    """The dashboard over the clients `client_factory` opens (one, shared by the worker
    threads; see clients.py). `root_path`: the prefix a reverse proxy serves it under
    (`/bgtaskex`), for links and the cookie's path; `read_only`: no button, and every
    POST but the login refused."""
    from . import api, pages

    root = root_path.rstrip("/")
    guard = Guard(settings.web_token, read_only=read_only, root_path=root)
    renderer = Pages(guard, root_path=root)
    web = Web(Clients(client_factory), settings, renderer, guard)
    routes: list[BaseRoute] = [
        *pages.routes(renderer),
        *api.routes(renderer),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _http_error,
            BgtaskexError: _bgtaskex_error,
            Exception: _internal_error,
        },
    )
    app.state.web = web
    app.add_middleware(Gate, guard=guard)
    return Dashboard(app)


#: The HTTP status of each error a Client raises.
_STATUS: tuple[tuple[type[BgtaskexError], int, str], ...] = (
    (TaskNotFound, 404, "Not found"),
    (UsageError, 400, "Bad request"),
    (InvalidState, 409, "Refused"),
    (StorageError, 503, "Database unavailable"),
)


def error_response(request: Request, status: int, title: str, message: str) -> Response:
    """One line, as a page or (under /api/) as `{"error": ...}`; never a traceback."""
    message = " ".join(mask_secrets(message).split())
    if wants_json(request):
        return Response(
            json.dumps({"error": message}), status_code=status, media_type="application/json"
        )
    return web_of(request).pages.response(
        request, "error.html", status, title=title, message=message
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    words = {404: "no such page", 405: "this method is not allowed here"}
    message = words.get(exc.status_code, str(exc.detail))
    return error_response(request, exc.status_code, str(exc.detail), message)


async def _bgtaskex_error(request: Request, exc: Exception) -> Response:
    for kind, status, title in _STATUS:
        if isinstance(exc, kind):
            message = str(exc)
            if status == 503:
                message = f"the database is unavailable: {message}"
            return error_response(request, status, title, message)
    return await _internal_error(request, exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s", request.url.path, exc_info=exc)
    message = f"internal error: {type(exc).__name__}: {exc} (see the server's log)"
    return error_response(request, 500, "Internal error", message)
