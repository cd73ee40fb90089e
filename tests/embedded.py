"""The embedded default (SQLite, no Redis, no broker) in a child process, for tests that need a
fresh process: a server, a settings check, a script run under `config.settings`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the test run itself may have set and the embedded default must not see.
_NOT_EMBEDDED = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG", "LOG_FORMAT"}


def embedded_env(tmp_path: Path, *, debug: bool, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _NOT_EMBEDDED}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", SQLITE_PATH=str(tmp_path / "db.sqlite3"))
    if debug:
        env["DEBUG"] = "1"
    env.update(extra)
    return env


def embedded_python(
    tmp_path: Path, script: str, **extra: str
) -> "subprocess.CompletedProcess[str]":
    """`script` run by this Python under the embedded default with DEBUG on (and `extra`)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=embedded_env(tmp_path, debug=True, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
