"""The CLI's logging: what reaches stderr besides bgtaskex's own lines."""

from __future__ import annotations

import subprocess
import sys


def test_psycopg_warnings_after_a_lost_session_stay_out_of_the_one_error_line() -> None:
    """When the server ends the session, psycopg warns "error ignored terminating
    <Pipeline>: the connection is lost" through logging's handler of last resort, a
    second line beside the run's own error (seen in test_db_faults). Its warnings are
    kept out; its errors, and any other library's warnings, still show."""
    script = (
        "import logging\n"
        "from bgtaskex.cli.logs import setup_logging\n"
        "setup_logging('WARNING')\n"
        "logging.getLogger('psycopg').warning('error ignored terminating pipeline')\n"
        "logging.getLogger('psycopg').error('psycopg error shown')\n"
        "logging.getLogger('sqlalchemy.pool').warning('pool warning shown')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.splitlines() == ["psycopg error shown", "pool warning shown"]
