"""Where an orchestrator command spends its time: cProfile tops and import times."""

from __future__ import annotations

import pstats
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from measure import Command, run_once

REPO = Path(__file__).resolve().parent.parent
SITE = re.compile(r".*/site-packages/")


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    filename = SITE.sub("", filename)
    filename = filename.replace(str(REPO) + "/", "")
    return f"{filename}:{line}:{name}"


_NOISE = (
    "<frozen importlib",
    "builtins.exec>",
    "builtins.__import__>",
    "__build_class__>",
    "<frozen runpy>",
    "orchestrator/__main__.py",
    "importlib/__init__",
    "contextlib.py",
    "builtins.next>",
    "generated warned() wrapper",
    "deprecations.py",
)


def cprofile(
    python: Path, args: Sequence[str], cwd: Path, env: Mapping[str, str], out: Path, top: int = 22
) -> tuple[float, list[tuple[str, float, float, int]]]:
    """Run `python -m orchestrator ARGS` under cProfile; (wall, top rows by cumulative time)."""
    wall = run_once(
        Command([python, "-m", "cProfile", "-o", out, "-m", "orchestrator", *args], cwd, env)
    )
    stats = pstats.Stats(str(out))
    rows = []
    for func, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = _where(func)
        if any(n in where for n in _NOISE):
            continue
        rows.append((where, ct, tt, nc))
    rows.sort(key=lambda r: r[1], reverse=True)
    return wall, rows[:top]


def tottime_top(out: Path, top: int = 12) -> list[tuple[str, float, float, int]]:
    stats = pstats.Stats(str(out))
    rows = [(_where(f), ct, tt, nc) for f, (_cc, nc, tt, ct, _c) in stats.stats.items()]  # type: ignore[attr-defined]
    rows.sort(key=lambda r: r[2], reverse=True)
    return rows[:top]


def import_times(
    python: Path, args: Sequence[str], cwd: Path, env: Mapping[str, str], top: int = 12
) -> list[tuple[str, float]]:
    """`-X importtime`: the top-level packages by cumulative import time (seconds)."""
    done = subprocess.run(
        [str(python), "-X", "importtime", "-m", "orchestrator", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        depth = len(m.group(3))
        if depth <= 1:  # imported directly by the program
            name = m.group(4)
            totals[name] = totals.get(name, 0.0) + int(m.group(2)) / 1e6
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:top]
