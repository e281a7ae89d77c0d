"""What every bench module shares: the commands timed, a clean environment, the log.
(Its own module, so that run.py imports fleet.py and signing.py and nothing imports back.)"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the commands timed: `make bench` installs them into a venv of their own, as a user would
BIN = Path(os.environ.get("BENCH_BIN") or REPO / ".venv" / "bin").resolve()
PYTHON = BIN / "python"
ORCH = BIN / "orchestrator"
ALEMBIC = BIN / "alembic"


def log(message: str) -> None:
    print(message, flush=True)


def clean_environ() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ORCHESTRATOR_", "GITHUB_", "CI_", "GITLAB_"))
        and not k.endswith("_DATABASE_URL")
    }
