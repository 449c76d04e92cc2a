"""`bgtaskex web`: the dashboard (bgtaskex.web, imported only here, with the web extra's
Starlette, Jinja2 and uvicorn) served by uvicorn."""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING

import click

from ..exceptions import UsageError
from .common import State, pass_state

if TYPE_CHECKING:
    from ..client import Client

DEFAULT_BIND = "127.0.0.1:8787"
MISSING_EXTRA = "the web extra is not installed: pip install -e '.[web]'"
#: The loggers of the server: uvicorn's, and the dashboard's own.
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "bgtaskex.web")
_BIND = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>\d{1,5})$")


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`127.0.0.1:8787`, `0.0.0.0:80`, `[::1]:8787`, `:8787` for
    127.0.0.1) as (host, port); UsageError otherwise."""
    match = _BIND.match(text.strip())
    port = int(match["port"]) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise UsageError(
            f"--bind takes HOST:PORT (like {DEFAULT_BIND} or [::1]:8787), got {text!r}"
        )
    return match["v6"] or match["host"] or "127.0.0.1", port


def check_root_path(text: str) -> str:
    """`/bgtaskex` (or empty): a path that starts with `/`, without a trailing one."""
    path = text.strip().rstrip("/")
    if path and (not path.startswith("/") or re.search(r"[\s?#\\]|//", path)):
        raise UsageError(f"--root-path takes a path like /bgtaskex, got {text!r}")
    return path


def listen(host: str, port: int) -> socket.socket:
    """The listening socket on `host:port`, opened before anything is served, so that
    a port in use or an address this machine does not have is one line and exit 2
    (uvicorn would log it and exit 3, the code of "no such task")."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as err:
        raise UsageError(f"--bind {host}:{port}: cannot resolve {host!r}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise UsageError(f"--bind {host}:{port}: cannot listen there: {err.strerror}") from None
    return sock


@click.command(
    epilog="""\b
Examples:
  bgtaskex web                                     # http://127.0.0.1:8787/
  bgtaskex web --read-only
  BGTASKEX_WEB_TOKEN=... bgtaskex web --bind 0.0.0.0:8787
  bgtaskex web --root-path /bgtaskex                # behind a reverse proxy""",
)
@click.option(
    "--bind",
    default=DEFAULT_BIND,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen (127.0.0.1 by default: this machine only).",
)
@click.option("--read-only", is_flag=True, help="No button; every POST but the login refused.")
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="The prefix a reverse proxy serves it under (/bgtaskex), for links and cookies.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    metavar="IPS",
    help="Proxies whose X-Forwarded-Proto/-For are trusted (comma-separated; '*': any).",
)
@pass_state
def web(state: State, bind: str, read_only: bool, root_path: str, forwarded_allow_ips: str) -> None:
    """Serve the dashboard: overview, tasks, processes, retention rules and runs, live,
    and a JSON API under /api/ (the objects of --json). The web_token setting
    (BGTASKEX_WEB_TOKEN) turns on a login; see the README, "Web dashboard"."""
    host, port = parse_bind(bind)
    prefix = check_root_path(root_path)
    try:
        import uvicorn

        from ..web.app import create_app
        from ..web.security import mask_token_in_logs
    except ImportError:
        raise UsageError(MISSING_EXTRA) from None
    settings = state.settings()
    from ..client import connect

    def client_factory() -> Client:
        # create=False: looking creates nothing; an existing schema is upgraded as by
        # the other write commands
        return connect(settings=settings, trust_refs=False, create=False)

    app = create_app(client_factory, settings, read_only=read_only, root_path=prefix)
    sock = listen(host, port)
    if host not in ("127.0.0.1", "::1", "localhost") and not settings.web_token:
        click.echo(
            f"bgtaskex web: warning: listening on {host} without web_token: anyone who can "
            "reach this port can see and act on the tasks",
            err=True,
        )
    scheme_host = f"[{host}]" if ":" in host else host
    click.echo(
        f"bgtaskex web on http://{scheme_host}:{port}{prefix}/"
        + (" (read-only)" if read_only else "")
        + (" (login by token)" if settings.web_token else ""),
        err=True,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        root_path=prefix,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level in ("DEBUG", "INFO"),
        server_header=False,
    )
    if settings.web_token:  # after uvicorn.Config, which configures its loggers
        mask_token_in_logs(settings.web_token, LOGGERS)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:  # as uvicorn.run: it said why
        raise SystemExit(3)
