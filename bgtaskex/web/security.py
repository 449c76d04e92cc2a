"""What keeps the dashboard safe: the login by token, the session cookie, the CSRF
token of every state-changing request, the same-origin check, and the security headers
of every response.

The session cookie is `id.auth.expires.mac`: a random id, whether it logged in, when it
expires, and an HMAC of the three under a key derived from a random nonce drawn at
start and the token. So the cookie is never the token, a restart or a changed token
invalidates every session, and nothing is stored server-side. The CSRF token is an HMAC
of the session id under the same key (bound to the session: another session's token is
refused). Without `web_token`, every visitor gets an anonymous session, for the CSRF
token alone.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

COOKIE = "bgtaskex_session"
FLASH_COOKIE = "bgtaskex_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


@dataclass(frozen=True, slots=True)
class Session:
    """A visitor's session, read from its cookie."""

    id: str
    authenticated: bool
    expires: int


class Guard:
    """Issues and checks sessions and CSRF tokens, for one start of the server."""

    def __init__(self, token: str | None, *, read_only: bool, root_path: str) -> None:
        self.login_required = token is not None
        self.read_only = read_only
        self.root_path = root_path
        self._token_digest = hashlib.sha256((token or "").encode()).digest()
        nonce = secrets.token_bytes(32)
        self._key = hmac.new(nonce, b"bgtaskex-web|" + self._token_digest, "sha256").digest()

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), "sha256").hexdigest()

    def new_session(self, *, authenticated: bool) -> tuple[Session, str]:
        """A fresh session (a new id: a login never keeps the id it came with) and its
        cookie value."""
        session = Session(
            secrets.token_urlsafe(18), authenticated, int(time.time()) + SESSION_SECONDS
        )
        body = f"{session.id}.{int(authenticated)}.{session.expires}"
        return session, f"{body}.{self._mac('session|' + body)}"

    def read_session(self, value: str | None) -> Session | None:
        """The session of a cookie value; None when it is missing, forged, from another
        start or token, or expired."""
        if not value or value.count(".") != 3:
            return None
        body, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac("session|" + body)):
            return None
        sid, auth, expires = body.split(".")
        if not expires.isdigit() or int(expires) < time.time():
            return None
        return Session(sid, auth == "1", int(expires))

    def allowed(self, session: Session | None) -> bool:
        """Whether this session may see the dashboard."""
        return not self.login_required or (session is not None and session.authenticated)

    def token_matches(self, given: str) -> bool:
        """Whether `given` is the token (compared in constant time, as digests)."""
        digest = hashlib.sha256(given.strip().encode()).digest()
        return self.login_required and hmac.compare_digest(digest, self._token_digest)

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf|" + session.id)

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        if session is None or not given:
            return False
        return hmac.compare_digest(given.strip(), self.csrf_token(session))

    def sign_flash(self, text: str) -> str:
        data = text.encode().hex()
        return f"{data}.{self._mac('flash|' + data)}"

    def read_flash(self, value: str | None) -> str | None:
        if not value or "." not in value:
            return None
        data, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac("flash|" + data)):
            return None
        try:
            return bytes.fromhex(data).decode()
        except ValueError:
            return None

    def cookie(self, name: str, value: str, *, secure: bool, max_age: int) -> str:
        """A Set-Cookie value: HttpOnly, SameSite=Strict, on the root path; Secure when
        the request came over https."""
        path = self.root_path or "/"
        flags = f"; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        return f"{name}={value}{flags}{'; Secure' if secure else ''}"


def same_origin(headers: MutableMapping[str, str] | Any, host: str | None) -> bool:
    """Whether a state-changing request comes from a page of this server: its Origin
    (else its Referer), when the browser sent one, names the host it was sent to."""
    origin = headers.get("origin")
    if origin is None:
        origin = headers.get("referer")
        if origin is None:
            return True  # not a browser's cross-site form: those send an Origin
    if origin == "null" or host is None:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


class TokenLogFilter(logging.Filter):
    """Masks the token in the records of the loggers it is attached to: a token pasted
    in a URL (`/api/stats?token=...`, which nothing accepts) would otherwise reach the
    access log, as given or percent-encoded (twice, in the `next` of the login
    redirect). A text holding it in an encoded form loses its whole query string."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def _mask(self, text: str) -> str:
        text = text.replace(self._token, "***")
        decoded = text
        for _ in range(3):
            decoded = unquote_plus(decoded)
            if self._token in decoded:
                path, mark, _query = text.partition("?")
                return f"{path}?***" if mark and self._token not in unquote(path) else "***"
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self._mask(record.msg)
        if isinstance(record.args, tuple):  # uvicorn's access formatter unpacks them
            record.args = tuple(self._mask(a) if isinstance(a, str) else a for a in record.args)
        return True


def mask_token_in_logs(token: str, loggers: tuple[str, ...]) -> None:
    """Attach a `TokenLogFilter` to each of `loggers` (a logger's filter sees only the
    records logged on it: name each one that logs)."""
    for name in loggers:
        logging.getLogger(name).addFilter(TokenLogFilter(token))


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityHeaders:
    """Adds the security headers to every HTTP response (pages, API, static files and
    errors alike), and `Cache-Control: no-store` to all but the static files. It wraps
    the whole application, outside Starlette's own error middleware, so that a 500 has
    them too."""

    def __init__(self, app: ASGIApp, *, static_prefix: str = "/static/") -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        route = path[len(root) :] if root and path.startswith(root) else path
        static = route.startswith(self.static_prefix)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {name for name, _ in HEADERS}
                ]
                kept.extend(HEADERS)
                if not static:
                    kept.append((b"cache-control", b"no-store"))
                message["headers"] = kept
            await send(message)

        await self.app(scope, receive, with_headers)
