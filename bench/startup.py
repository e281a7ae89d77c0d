"""Where a run's fixed cost goes: the imports its path needs, library by library.

One interpreter imports the stacks in order and times each (what it adds to those before
it); the fastest of `reps` fresh interpreters is kept: start-up is short, the minimum is
its cost and the rest is the machine. The first stacks are what bare Alembic pays too.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# (what it is, the statement that imports it, whether bare Alembic imports it too), in order
STACKS: list[tuple[str, str, bool]] = [
    (
        "SQLAlchemy, psycopg and its dialect",
        "import sqlalchemy.dialects.postgresql.psycopg, psycopg",
        True,
    ),
    (
        "Alembic's runtime",
        "import alembic.command, alembic.runtime.migration, alembic.operations",
        True,
    ),
    ("pydantic (environment files)", "import pydantic; pydantic.BaseModel", False),
    ("pydantic-settings (ORCHESTRATOR_* settings)", "import pydantic_settings", False),
    ("PyYAML", "import yaml", False),
    ("structlog (event lines)", "import structlog", False),
    (
        "cryptography: Ed25519 (signing)",
        "from cryptography.hazmat.primitives.asymmetric import ed25519",
        False,
    ),
    (
        "the orchestrator's own modules on migrate's path",
        "import orchestrator.commands.migrate, orchestrator.core.signing, "
        "orchestrator.schema.reader",
        False,
    ),
]


_TIMER = """
import json, sys, time
out = []
for statement in json.loads(sys.argv[1]):
    start = time.perf_counter()
    exec(statement)
    out.append(time.perf_counter() - start)
print(json.dumps(out))
"""


_EXIT = """
import gc, json, os, sys, time
for statement in json.loads(sys.argv[1]):
    exec(statement)
if sys.argv[2] == "freeze":
    gc.freeze()
os.write(1, repr(time.time()).encode())
"""

# what the interpreter's shutdown costs after these imports (the first two stacks: bare
# Alembic's), as Python does it and after `gc.freeze()`, as the `orchestrator` command does
_EXITS: list[tuple[str, int, str]] = [
    ("bare Alembic's imports, as Python shuts down", 2, ""),
    ("all the imports above, as Python shuts down", len(STACKS), ""),
    ("all the imports above, frozen first (the `orchestrator` command)", len(STACKS), "freeze"),
]


def _run_script(python: Path, env: Mapping[str, str], script: str, *args: str) -> str:
    """What `script` prints, run by a fresh interpreter in "/" (never the repository's
    orchestrator/ in place of the venv's)."""
    return subprocess.run(
        [str(python), "-c", script, *args],
        cwd="/",
        env=dict(env),
        check=True,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    ).stdout


def _exit_costs(python: Path, env: Mapping[str, str], reps: int) -> list[float]:
    """Time from a script's last statement to its process's end, the fastest of `reps`."""
    best = [float("inf")] * len(_EXITS)
    for _ in range(reps):
        for i, (_label, count, how) in enumerate(_EXITS):
            statements = json.dumps([statement for _l, statement, _s in STACKS[:count]])
            printed = _run_script(python, env, _EXIT, statements, how)
            best[i] = min(best[i], time.time() - float(printed))
    return best


def _stage_costs(python: Path, env: Mapping[str, str], reps: int) -> tuple[list[float], float]:
    """Each stack's import time, measured in one interpreter as it is imported after those
    above it, the fastest of `reps` fresh interpreters; and the interpreter's own start-up
    (a run of `pass`), fastest too."""
    statements = json.dumps([statement for _label, statement, _shared in STACKS])
    best = [float("inf")] * len(STACKS)
    bare = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run([str(python), "-c", "pass"], cwd="/", env=dict(env), check=True)
        bare = min(bare, time.perf_counter() - start)
        times = json.loads(_run_script(python, env, _TIMER, statements))
        best = [min(b, t) for b, t in zip(best, times, strict=True)]
    return best, bare


def startup_section(
    python: Path,
    env: Mapping[str, str],
    commands: Mapping[str, Callable[[], float]],
    reps: int,
    log: Callable[[str], None],
) -> tuple[str, list[str]]:
    """The import table, and the fastest wall time of each of `commands` beside it."""
    log(f"  start-up: imports stack by stack ({reps} runs each, fastest kept)")
    env = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    costs, interpreter = _stage_costs(python, env, reps)
    rows = [("the Python interpreter, started", interpreter, True)]
    rows += [(label, cost, shared) for (label, _s, shared), cost in zip(STACKS, costs, strict=True)]
    exits = _exit_costs(python, env, reps)
    walls = {name: min(cmd() for _ in range(reps)) for name, cmd in commands.items()}
    shared = sum(r[1] for r in rows if r[2])
    ours = sum(r[1] for r in rows if not r[2])
    out = [
        "## Start-up: where a run's fixed cost goes",
        "",
        "Each row is the time one more stack takes to import, in one interpreter, after the "
        f"rows above it (the venv `make bench` timed); the fastest of {reps} fresh "
        "interpreters. A library that two stacks use (asyncio, say) is charged to the first.",
        "",
        "| imports | adds (s) | bare Alembic pays it too |",
        "|---|---:|:---:|",
    ]
    out += [f"| {label} | {adds:.3f} | {'yes' if sh else ''} |" for label, adds, sh in rows]
    out += [
        "",
        "A process's end costs time too: the interpreter's shutdown runs full garbage "
        "collections over every object still alive, most of them made by the imports. From "
        "a script's last statement to its process's end, the fastest of "
        f"{reps}:",
        "",
        "| shutdown after | takes (s) |",
        "|---|---:|",
    ]
    out += [
        f"| {label} | {cost:.3f} |" for (label, _c, _h), cost in zip(_EXITS, exits, strict=True)
    ]
    out += ["", "Fastest wall time of whole commands in the same minute, for scale:", ""]
    out += [f"- {name}: {wall:.3f} s" for name, wall in walls.items()]
    out += [
        "",
        f"Imports shared with bare Alembic: {shared:.3f} s; the orchestrator's own: "
        f"{ours:.3f} s. What is left of a command's time past its imports is its work: "
        "connections, the gate's reads, the audit trail, signing (profiled below when a "
        "target is not met).",
        "",
    ]
    summary = [
        f"start-up imports: shared with Alembic {shared:.3f} s, ours {ours:.3f} s; "
        f"shutdown: bare Alembic's {exits[0]:.3f} s, ours {exits[2]:.3f} s"
    ]
    return "\n".join(out) + "\n", summary


if __name__ == "__main__":  # a quick look without the rest of the bench
    here = Path(__file__).resolve().parent
    python = Path(os.environ.get("BENCH_BIN") or here.parent / ".venv" / "bin").resolve() / "python"
    text, _ = startup_section(python, dict(os.environ), {}, 5, print)
    print(text)
