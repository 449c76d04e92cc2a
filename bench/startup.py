"""Start-up cost of the `bgtaskex` command, against the interpreter's own.

Cron calls `bgtaskex run-once` every minute, mostly to find nothing due, so the idle case
must stay close to a bare `python -c pass` (the probe's fast path, without SQLAlchemy). The
commands run in alternation, each round in a rotated order, after one untimed warm-up round;
the report gives each command's median wall time and its ratios to `python -c pass` and to
`python -c "import sqlalchemy"` (medians of the per-round ratios, which cancel drift).

With the `bench` extra installed, the peers' command-line start-up runs beside them
(`huey_consumer --help`, `procrastinate --help`); without it those rows are skipped with a
note. Targets (issue #17; `targets(result)` gives them to other benchmarks' reports):
idle run-once at most 2x `python -c pass`; run-once with one task due at most 1.0x
`import sqlalchemy` + the SQLite driver (what a run on the embedded database cannot avoid).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import BenchError, median, quartiles, rotated

RUNS_FULL = 21
RUNS_QUICK = 5
NOOP_REF = "bgtaskex.examples:NothingToDo"  # init_params returns False: skipped, no execute
TARGET_IDLE_X_PYTHON = 2.0
TARGET_DUE_X_SQLALCHEMY_DRIVER = 1.0
SQLALCHEMY_DRIVER = "import sqlalchemy, sqlite3, sqlalchemy.dialects.sqlite.pysqlite"


@dataclass
class Command:
    key: str
    label: str
    argv: list[str]
    before: Callable[[], None] | None = None  # untimed preparation, before every run
    expect: str | None = None  # a substring stdout must contain

    def check(self, proc: subprocess.CompletedProcess[str]) -> None:
        if proc.returncode != 0 or (self.expect is not None and self.expect not in proc.stdout):
            raise BenchError(
                f"{self.label}: exit {proc.returncode}, expected {self.expect!r} in stdout\n"
                f"stdout: {proc.stdout.strip()[:500]}\nstderr: {proc.stderr.strip()[:2000]}"
            )


def _bgtaskex_argv() -> list[str]:
    script = shutil.which("bgtaskex", path=str(Path(sys.executable).parent))
    if script is None:
        script = shutil.which("bgtaskex")
    if script is None:
        raise BenchError("no `bgtaskex` console script next to this Python or on PATH")
    return [script]


def _venv_script(name: str) -> str | None:
    """The console script `name` next to this Python (the venv's), else on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def _clean_env(home: Path) -> dict[str, str]:
    """The environment of a cron job of a user with no bgtaskex config: a fresh HOME."""
    drop = ("BGTASKEX_", "PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    return env


def _run(cmd: Command, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of `cmd`; preparation not included."""
    if cmd.before is not None:
        cmd.before()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(
        cmd.argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd.check(proc)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return wall, cpu


def _imports(cmd: Command, env: dict[str, str], cwd: Path) -> tuple[int, bool]:
    """How many modules one run imports, and whether SQLAlchemy is among them."""
    if cmd.before is not None:
        cmd.before()
    proc = subprocess.run(
        cmd.argv,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    cmd.check(proc)
    names = [
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line and "cumulative" not in line
    ]
    return len(names), any(n == "sqlalchemy" or n.startswith("sqlalchemy.") for n in names)


def run(console: Console, *, quick: bool = False, runs: int | None = None) -> dict[str, Any]:
    from bgtaskex.client import connect

    rounds = runs or (RUNS_QUICK if quick else RUNS_FULL)
    bgtaskex = _bgtaskex_argv()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-startup-") as tmp:
        base = Path(tmp)
        idle_home, due_home, cwd = base / "idle-home", base / "due-home", base / "cwd"
        cwd.mkdir()
        idle_env, due_env = _clean_env(idle_home), _clean_env(due_home)
        # The embedded database at its default place, schema created, as after first use.
        urls = {}
        for home in (idle_home, due_home):
            db = home / ".local" / "share" / "bgtaskex" / "bgtaskex.db"
            db.parent.mkdir(parents=True)
            urls[home] = f"sqlite:///{db}"
            connect(urls[home]).close()
        due_client = connect(urls[due_home])

        def enqueue_one() -> None:
            due_client.enqueue("bench-startup", [NOOP_REF])

        commands = [
            Command("python", "python -c pass", [sys.executable, "-c", "pass"]),
            Command(
                "sqlalchemy",
                'python -c "import sqlalchemy"',
                [sys.executable, "-c", "import sqlalchemy"],
            ),
            Command(
                "run_once_idle",
                "bgtaskex run-once (idle db)",
                [*bgtaskex, "run-once"],
                expect="nothing due",
            ),
            Command(
                "run_once_due",
                "bgtaskex run-once (1 task due)",
                [*bgtaskex, "run-once"],
                before=enqueue_one,
                expect="1 finished",
            ),
            Command(
                "sqlalchemy_driver",
                'python -c "import sqlalchemy + sqlite driver"',
                [sys.executable, "-c", SQLALCHEMY_DRIVER],
            ),
            Command("help", "bgtaskex --help", [*bgtaskex, "--help"], expect="run-once"),
        ]
        skipped: dict[str, str] = {}
        for key, script, expect in (
            ("huey_consumer_help", "huey_consumer", "Usage"),
            ("procrastinate_help", "procrastinate", "usage"),
        ):
            path = _venv_script(script)
            if path is None:
                skipped[key] = f"{script} not installed (pip install -e '.[bench]')"
                console.print(f"[yellow]start-up: {script} --help skipped: not installed[/yellow]")
                continue
            commands.append(Command(key, f"{script} --help", [path, "--help"], expect=expect))
        envs = {c.key: due_env if c.key == "run_once_due" else idle_env for c in commands}

        wall: dict[str, list[float]] = {c.key: [] for c in commands}
        cpu: dict[str, list[float]] = {c.key: [] for c in commands}
        began = time.monotonic()
        try:
            for cmd in commands:  # warm-up: .pyc files, page cache
                _run(cmd, envs[cmd.key], cwd)
            for r in range(rounds):
                for cmd in rotated(commands, r):
                    w, c = _run(cmd, envs[cmd.key], cwd)
                    wall[cmd.key].append(w)
                    cpu[cmd.key].append(c)
            imports = {c.key: _imports(c, envs[c.key], cwd) for c in commands}
        finally:
            due_client.close()
        elapsed = time.monotonic() - began

    def ratios(key: str, ref: str) -> list[float]:
        return [a / b for a, b in zip(wall[key], wall[ref], strict=True)]

    rows: list[dict[str, Any]] = []
    for cmd in commands:
        lo, hi = quartiles(wall[cmd.key])
        rows.append(
            {
                "key": cmd.key,
                "command": cmd.label,
                "wall_ms_median": median(wall[cmd.key]) * 1000,
                "wall_ms_p25": lo * 1000,
                "wall_ms_p75": hi * 1000,
                "cpu_ms_median": median(cpu[cmd.key]) * 1000,
                "ratio_to_python": median(ratios(cmd.key, "python")),
                "ratio_to_sqlalchemy": median(ratios(cmd.key, "sqlalchemy")),
                "ratio_to_sqlalchemy_driver": median(ratios(cmd.key, "sqlalchemy_driver")),
                "ratio_to_run_once_due": median(ratios(cmd.key, "run_once_due")),
                "modules_imported": imports[cmd.key][0],
                "imports_sqlalchemy": imports[cmd.key][1],
                "wall_s": wall[cmd.key],
                "cpu_s": cpu[cmd.key],
            }
        )

    table = Table(
        title=f"Start-up: median of {rounds} alternating runs (+1 warm-up), fresh HOME",
        title_justify="left",
    )
    table.add_column("command")
    table.add_column("wall ms", justify="right")
    table.add_column("p25-p75 ms", justify="right")
    table.add_column("cpu ms", justify="right")
    table.add_column("x python -c pass", justify="right")
    table.add_column("x import sqlalchemy", justify="right")
    table.add_column("x sqlalchemy + driver", justify="right")
    table.add_column("x run-once (1 due)", justify="right")
    table.add_column("modules", justify="right")
    table.add_column("sqlalchemy?", justify="center")
    for row in rows:
        table.add_row(
            row["command"],
            f"{row['wall_ms_median']:.1f}",
            f"{row['wall_ms_p25']:.1f}-{row['wall_ms_p75']:.1f}",
            f"{row['cpu_ms_median']:.1f}",
            f"{row['ratio_to_python']:.2f}",
            f"{row['ratio_to_sqlalchemy']:.2f}",
            f"{row['ratio_to_sqlalchemy_driver']:.2f}",
            f"{row['ratio_to_run_once_due']:.2f}",
            str(row["modules_imported"]),
            "yes" if row["imports_sqlalchemy"] else "no",
        )
    console.print(table)
    by_key = {row["key"]: row for row in rows}
    notes = []
    if by_key["run_once_idle"]["imports_sqlalchemy"]:
        notes.append("[red]run-once on an idle database imported SQLAlchemy: no fast path[/red]")
    idle_extra = by_key["run_once_idle"]["wall_ms_median"] - by_key["python"]["wall_ms_median"]
    notes.append(
        f"idle run-once costs {idle_extra:.0f} ms more than a bare interpreter; 'modules' is "
        "the count -X importtime reports for one extra run."
    )
    for note in notes:
        console.print(note)
    result: dict[str, Any] = {"commands": rows}
    found = targets(result)
    print_targets(console, found)
    for key, why in skipped.items():
        console.print(f"[yellow]{key}: skipped ({escape(why)})[/yellow]")
    console.print(f"[dim]start-up benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "runs": rounds,
        "elapsed_s": elapsed,
        "commands": rows,
        "targets": found,
        "skipped": skipped,
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #17's start-up targets, from `run`'s result (its "commands" rows): each as
    {"target": str, "measured": float (the median of the per-round wall-time ratios),
    "met": bool}, plus "measured_cpu" (the same of the child's CPU time: steadier on a
    loaded machine, and not what "met" is judged on)."""
    by_key = {row["key"]: row for row in result["commands"]}

    def cpu_ratio(key: str, ref: str) -> float:
        pairs = zip(by_key[key]["cpu_s"], by_key[ref]["cpu_s"], strict=True)
        return median([a / b for a, b in pairs if b > 0])

    idle = by_key["run_once_idle"]["ratio_to_python"]
    due = by_key["run_once_due"]["ratio_to_sqlalchemy_driver"]
    return [
        {
            "target": f"start-up on an idle database: run-once at most {TARGET_IDLE_X_PYTHON}x "
            "python -c pass",
            "measured": idle,
            "met": idle <= TARGET_IDLE_X_PYTHON,
            "measured_cpu": cpu_ratio("run_once_idle", "python"),
        },
        {
            "target": "start-up with one task due: run-once at most "
            f"{TARGET_DUE_X_SQLALCHEMY_DRIVER}x import sqlalchemy + sqlite driver",
            "measured": due,
            "met": due <= TARGET_DUE_X_SQLALCHEMY_DRIVER,
            "measured_cpu": cpu_ratio("run_once_due", "sqlalchemy_driver"),
        },
    ]


def print_targets(console: Console, found: list[dict[str, Any]]) -> None:
    """The "Targets (start-up)" table of `targets`' rows."""
    table = Table(title="Targets (start-up)", title_justify="left")
    for column in ("target", "measured", "met", "cpu time"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for t in found:
        met = "[green]yes[/green]" if t["met"] else "[red]no[/red]"
        cpu = f"{t['measured_cpu']:.2f}x" if "measured_cpu" in t else ""
        table.add_row(t["target"], f"{t['measured']:.2f}x", met, cpu)
    console.print(table)
