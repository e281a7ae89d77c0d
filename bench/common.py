"""What every bench module shares: the commands timed, a clean environment, the log.
(Its own module, so that run.py imports fleet.py and signing.py and nothing imports back.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


Section = Callable[[Any, Callable[[str], None]], tuple[str, list[str]]]


def standalone(section: Section) -> int:
    """Run one bench section alone, on a cluster of its own, and print what it found."""
    from cluster import DurableCluster

    cluster = DurableCluster()
    cluster.start()
    try:
        text, summary = section(cluster, log)
    finally:
        cluster.stop()
    print(text)
    print("\n".join(summary))
    return 0
