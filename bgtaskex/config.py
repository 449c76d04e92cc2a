"""Settings: a TOML file, then `BGTASKEX_*` environment variables, then options.

Options win over the environment, the environment over the file. Every value is checked
here, and a bad one raises `ConfigError` with one line naming the key and where it came
from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .bounds import (
    AT_LEAST_ONE,
    DURATION,
    DURATION_OR_NEVER,
    DURATION_PATTERN,
    KEEP_FOR,
    POSITIVE_DURATION,
    POSITIVE_DURATION_OR_NEVER,
)
from .bounds import MAX_DURATION as MAX_DURATION  # re-exported, as before bounds.py
from .bounds import parse_duration as parse_duration
from .concurrency import Concurrency, parse_concurrency
from .exceptions import ConfigError
from .urls import default_database_url, sqlite_path
from .walltime import local_zone, wall_instant

if TYPE_CHECKING:
    # Imported when first needed: settings without processes or retention rules (the
    # idle `run-once` of cron, as a rule) do without them.
    from .processes import Process
    from .rules import RetentionRule

ENV_PREFIX = "BGTASKEX_"


_SIZE = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def _byte_size(value: object) -> int:
    """Bytes from a whole number or a string like `1048576`, `512KiB`, `1MiB`."""
    match = None if isinstance(value, bool | float) else _SIZE.match(str(value))
    if match is None or int(match["n"]) < 1:
        raise ValueError(f"expected a size in bytes >= 1 (or 512KiB, 1MiB), got {value!r}")
    return int(match["n"]) * _SIZE_UNITS[match["unit"] or "B"]


def params_size(params: object) -> int:
    """The size `max_params_bytes` limits: the bytes of `json.dumps(params)`, the text
    the database is sent (ASCII: other characters are escaped), at enqueue and when a
    hook leaves params alike."""
    import json

    return len(json.dumps(params, allow_nan=False))


def params_problem(params: object) -> str | None:
    """Why params (JSON values) cannot be stored on every backend, None when they can: a
    string, key or value, holding a NUL (PostgreSQL refuses it in JSON) or a lone
    surrogate (it has no UTF-8). Refused at enqueue and when a hook leaves them, on every
    backend alike, so that no flush of a run fails on them in the database."""
    stack = [params]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            problem = text_problem(value)
            if problem:  # not the value itself: it may be a secret
                return f"a string holds {problem}"
    return None


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored on every backend (a NUL, a lone surrogate), None
    when it can; ASCII without a NUL is told at once."""
    if "\x00" in text:
        return "a NUL character"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (no UTF-8 for it)"
    return None


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _modules(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"expected a list of module names, got {value!r}")
    names = tuple(i.strip() for i in items if i.strip())
    for name in names:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            raise ValueError(f"{name!r} is not a module name")
    return names


def _directories(value: object) -> tuple[str, ...]:
    """Directories as given: a list, or one string of them separated by os.pathsep (as in
    PYTHONPATH; empty parts are skipped, never read as the working directory)."""
    items = value.split(os.pathsep) if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"expected a list of directories, got {value!r}")
    if any("\0" in i for i in items):
        raise ValueError(f"a directory name cannot hold a NUL character, got {value!r}")
    return tuple(os.path.expanduser(i.strip()) for i in items if i.strip())


def _web_token(value: object) -> str:
    """The dashboard's login token: at least 16 characters. Never quoted in the error:
    the value is a secret."""
    if not isinstance(value, str) or len(value.strip()) < 16:
        raise ValueError("expected a string of at least 16 characters (the value is not shown)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value.strip()):
        raise ValueError("expected no control characters (the value is not shown)")
    return value.strip()


def _flag(value: object) -> bool:
    """A boolean: TOML's true/false, or (from the environment) true/false, yes/no, 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().upper()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


class Settings(NamedTuple):
    """Everything a run, the CLI and the client need to know. Immutable: `_replace`
    returns a copy with some values changed.

    A named tuple, not a dataclass: the idle `run-once` loads the settings, and importing
    `dataclasses` (with `inspect`) costs it about 12 ms (bench/startup.py). Two fields
    keep what a dataclass `field()` gave them: `web_token` is left out of the repr (a
    secret), and `config_file`, the last field, out of comparisons."""

    database_url: str | None = None
    max_execution_time: float = 30.0
    max_attempts: int = 5
    imports: tuple[str, ...] = ()
    pythonpath: tuple[str, ...] = ()  # absolute, in the order they go on sys.path
    lock_file: str | None = None
    sqlite_synchronous: str = "FULL"
    history: str = "ALL"  # FAILURES: a run records no routine status change (store.RunQueries)
    log_level: str = "WARNING"
    keep_finished: float | None = 30 * 86400.0  # finished and cancelled tasks; None = forever
    keep_failed: float | None = 90 * 86400.0
    stuck_after: float = 180.0  # `check`: a task not ended and untouched this long is stuck
    stale_after: float | None = 300.0  # `check`: slack before a process is late; None: never
    stop_timeout: float = 20.0  # the daemon's bound on a graceful stop
    log_format: str = "TEXT"
    max_params_bytes: int = 1024 * 1024  # an action's params, as JSON (see params_size)
    kill_after: float | None = 60.0  # a hook may run this long past the deadline; None: never
    retry_delay: float = 30.0  # before execute is tried again after a death (doubled each)
    max_retry_delay: float = 3600.0  # the cap of that doubling
    processes: tuple[Process, ...] = ()
    retention_rules: tuple[RetentionRule, ...] = ()
    concurrency: Concurrency = Concurrency()
    # `bgtaskex web`: a login token (None: no login) and whether params under secret-looking
    # keys are shown; the token is kept out of the repr (it is a secret)
    web_token: str | None = None
    web_show_secrets: bool = False
    config_file: str | None = None  # last: out of comparisons (__eq__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self[:-1] == other[:-1]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:-1])

    def __repr__(self) -> str:
        shown = (f"{k}={v!r}" for k, v in zip(self._fields, self, strict=True) if k != "web_token")
        return f"Settings({', '.join(shown)})"

    @property
    def scheduled(self) -> tuple[Process, ...]:
        """The processes the daemon runs: the configured ones, or the default one (all
        queues, every 60 s) when none but `retention` is configured; plus, when retention
        rules are configured, the `retention` process (unless one of that name is
        configured, which then gets the planner if it has no callable, and the
        `retention` queue if it names none).

        A process that names no queues serves every queue that no other process names.
        """
        from dataclasses import replace  # a process is a dataclass: not on the idle path

        from .processes import DEFAULT_PROCESS
        from .rules import DEFAULT_RETENTION_PROCESS, PLANNER, RETENTION_PROCESS

        found = list(self.processes)
        if all(p.name == RETENTION_PROCESS for p in found):
            found.insert(0, DEFAULT_PROCESS)  # configuring retention alone keeps the default
        if self.retention_rules:
            index = next((i for i, p in enumerate(found) if p.name == RETENTION_PROCESS), None)
            if index is None:
                found.append(DEFAULT_RETENTION_PROCESS)
            else:
                own = found[index]
                found[index] = replace(
                    own,
                    queues=own.queues or DEFAULT_RETENTION_PROCESS.queues,
                    callable=own.callable or PLANNER,
                )
        named = {q for p in found for q in p.queues or ()}
        return tuple(
            p if p.queues else replace(p, exclude_queues=tuple(sorted(named))) for p in found
        )

    def process(self, name: str) -> Process:
        for process in self.scheduled:
            if process.name == name:
                return process
        known = ", ".join(p.name for p in self.scheduled)
        raise ConfigError(f"no process named {name!r} (configured: {known})")

    @property
    def claimed_queues(self) -> tuple[str, ...]:
        """The queues that scheduled processes name: `run-once` without `--process`
        leaves them to their process."""
        if not self.processes and not self.retention_rules:
            return ()  # only the default process, which names no queue
        return tuple(sorted({q for p in self.scheduled for q in p.queues or ()}))

    def retention_rule(self, name: str) -> RetentionRule:
        for rule in self.retention_rules:
            if rule.name == name:
                return rule
        known = ", ".join(r.name for r in self.retention_rules) or "none"
        raise ConfigError(f"no retention rule named {name!r} (configured: {known})")

    @property
    def keep_ended(self) -> dict[str, float]:
        """Seconds to keep bgtaskex's own ended tasks, by status (statuses kept forever
        are absent): their expiry, not the retention rules of an application's rows.

        Status names rather than `TaskStatus` members: the idle `run-once` reads this
        without importing the models."""
        keep = {
            "finished": self.keep_finished,
            "cancelled": self.keep_finished,
            "failed": self.keep_failed,
        }
        return {status: seconds for status, seconds in keep.items() if seconds is not None}

    @property
    def died_after(self) -> float | None:
        """Seconds past its budget after which a run still recorded as "running" died
        (`RunRecord.died`): `kill_after` ends it by then, plus a lease and a margin.
        None when `kill_after` is "never": only a gone process tells then."""
        if self.kill_after is None:
            return None
        return self.kill_after + self.concurrency.lease + 60.0

    @property
    def url(self) -> str:
        """The database URL, the embedded SQLite file by default."""
        return self.database_url or default_database_url()

    @property
    def uses_default_url(self) -> bool:
        return self.database_url is None

    @property
    def lock_path(self) -> Path:
        """The run lock: `--lock-file`, else a file next to the SQLite database, else one
        per database URL in the data directory."""
        if self.lock_file:
            return Path(self.lock_file)
        path = sqlite_path(self.url)
        if path is not None:
            return path.with_name(path.name + ".lock")
        import hashlib

        from .urls import default_data_dir

        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        return default_data_dir() / f"run-{digest}.lock"


def _processes(value: object) -> tuple[Process, ...]:
    from .processes import parse_processes

    return parse_processes(value)


def _retention_rules(value: object) -> tuple[RetentionRule, ...]:
    from .rules import parse_rules

    return parse_rules(value, parse_duration)


PARSERS: dict[str, Callable[[object], Any]] = {
    "database_url": _text,
    "max_execution_time": POSITIVE_DURATION,
    "max_attempts": AT_LEAST_ONE,
    "imports": _modules,
    "pythonpath": _directories,
    "lock_file": _text,
    "sqlite_synchronous": _choice("OFF", "NORMAL", "FULL", "EXTRA"),
    "history": _choice("ALL", "FAILURES"),
    "log_level": _choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "keep_finished": KEEP_FOR,
    "keep_failed": KEEP_FOR,
    "stuck_after": POSITIVE_DURATION,
    "stop_timeout": POSITIVE_DURATION,
    "stale_after": POSITIVE_DURATION_OR_NEVER,
    "log_format": _choice("TEXT", "JSON"),
    "max_params_bytes": _byte_size,
    "kill_after": DURATION_OR_NEVER,
    "retry_delay": DURATION,
    "max_retry_delay": DURATION,
    "processes": _processes,
    "retention_rules": _retention_rules,
    "concurrency": parse_concurrency,
    "web_token": _web_token,
    "web_show_secrets": _flag,
}
assert set(PARSERS) == set(Settings._fields) - {"config_file"}
assert Settings._fields[-1] == "config_file"  # what Settings.__eq__ leaves out


def env_var(key: str) -> str:
    return ENV_PREFIX + key.upper()


def default_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "bgtaskex" / "bgtaskex.toml"


def _read_file(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as err:
        raise ConfigError(f"config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path}: invalid TOML: {err}") from None
    unknown = sorted(set(data) - set(PARSERS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]!r}")
    return data


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    sources: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge file < environment < overrides into checked `Settings`.

    `config_file` None means `BGTASKEX_CONFIG`, else the user's default file if it exists.
    `sources` names where each override came from, for error messages.
    """
    environ = os.environ if environ is None else environ
    path: Path | None
    if config_file is None and environ.get(env_var("config")):
        config_file = environ[env_var("config")]
    if config_file is not None:
        path = Path(config_file).expanduser()
    else:
        path = default_config_file()
        if not path.is_file():
            path = None

    layers: list[tuple[str, tuple[object, str]]] = []
    if path is not None:
        layers += [(k, (v, f"config file {path}")) for k, v in _read_file(path).items()]
    file_layers = len(layers)
    layers += [(k, (environ[env_var(k)], env_var(k))) for k in PARSERS if env_var(k) in environ]
    for key, value in (overrides or {}).items():
        if key not in PARSERS:
            raise ConfigError(f"unknown setting {key!r}")
        if value is not None:
            origin = (sources or {}).get(key, "option --" + key.replace("_", "-"))
            layers.append((key, (value, origin)))

    values: dict[str, Any] = {}
    imports: list[str] = []
    pythonpath: tuple[str, ...] = ()
    for index, (key, (value, origin)) in enumerate(layers):
        try:
            parsed = PARSERS[key](value)
        except ValueError as err:
            raise ConfigError(f"{key} (from {origin}): {err}") from None
        if key == "imports":  # declaring modules is additive across the layers
            imports.extend(m for m in parsed if m not in imports)
            parsed = tuple(imports)
        elif key == "pythonpath":  # additive too; a later layer's directories go first
            # relative to the config file's directory, or (env, option) the working one
            base = str(path.parent) if path is not None and index < file_layers else ""
            ahead = tuple(os.path.abspath(os.path.join(base, d)) for d in parsed)
            pythonpath = parsed = tuple(dict.fromkeys(ahead + pythonpath))
        values[key] = parsed
    return Settings(config_file=str(path) if path else None, **values)


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """A moment from `2h` (that long ago), `2026-11-28` or `2026-11-28T14:30` (local time
    unless an offset or Z is given; a local time the clock skips or repeats is read by
    the DST rule of `walltime`). Raises ValueError naming the value."""
    now = now or datetime.now(UTC)
    text = value.strip()
    if DURATION_PATTERN.match(text):
        return now - timedelta(seconds=parse_duration(text))
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:
        raise ValueError(
            f"expected a duration ago (2h, 7d) or a date (2026-11-28[T14:30]), got {value!r}"
        ) from None
    try:
        if moment.tzinfo is None:  # the machine's local wall clock
            return wall_instant(moment, local_zone())
        return moment.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999
        raise ValueError(f"date out of range: {value!r}") from None
