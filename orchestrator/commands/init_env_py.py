"""What `init` does with a project's `env.py`: hand it over, or say exactly what to change.

Three shapes are told apart:

- the `env.py` of `alembic init` (templates generic, pyproject, async): its last block, the
  offline/online dispatch, becomes `run_migrations(target_metadata)`;
- Flask-Migrate's: it reads Flask's `current_app` (at import, for the URL and the models), so
  it cannot run outside `flask db ...`. It becomes three lines that take the models' MetaData
  from the module defining Flask-SQLAlchemy's `db` (which needs no application), but only when
  `init` found that module and imported it outside Flask; otherwise it prints that env.py;
- anything else: the change to make by hand, printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.secrets import redact

# What `alembic init` (templates generic, pyproject, async...) ends env.py with.
STOCK_ENDING = re.compile(
    r"\nif context\.is_offline_mode\(\):\n"
    r"    run_migrations_offline\(\)\n"
    r"else:\n"
    r"    (?:asyncio\.run\()?run_migrations_online\(\)\)?\n*\Z"
)
HAND_OVER = (
    "\n# Every run goes through the orchestrator: gate, lock, ledger and audit trail; plain\n"
    "# `alembic -x env=NAME upgrade head` targets environments/NAME.yaml.\n"
    "from orchestrator.alembic_env import run_migrations  # noqa: E402\n"
    "\n"
    "run_migrations(target_metadata)\n"
)
_FLASK = re.compile(r"\bcurrent_app\b|\bflask_migrate\b|\bfrom flask import\b")
_DB = re.compile(r"^(?P<name>\w+)\s*(?::[^=]*)?=\s*(?:[\w.]+\.)?SQLAlchemy\(", re.MULTILINE)
_MODEL = re.compile(r"^class\s+\w+\s*\([^)]*\bdb\.Model\b", re.MULTILINE)
_SKIP_DIRS = {"migrations", "tests", "test", "node_modules", "build", "dist", "site-packages"}


@dataclass(frozen=True)
class EnvPyChange:
    kind: str  # stock | flask | custom | handed over
    content: str | None  # the new env.py when init can make the change itself
    advice: str  # what to change by hand, or what the change does


def hand_over(text: str) -> str | None:
    """env.py with its last block replaced by the hand-over, or None if it is not stock."""
    if not re.search(r"^\s*target_metadata\s*(?::[^=\n]*)?=", text, re.MULTILINE):
        return None  # only named in a comment (Flask-Migrate's): the hand-over would not run
    match = STOCK_ENDING.search(text)
    if match is None:
        return None
    return text[: match.start()].rstrip("\n") + "\n\n" + HAND_OVER


def is_flask_migrate(text: str) -> bool:
    return bool(_FLASK.search(text))


def change_env_py(text: str, project_dir: Path, import_roots: list[Path]) -> EnvPyChange:
    if "orchestrator.alembic_env" in text:
        return EnvPyChange("handed over", None, "")
    if is_flask_migrate(text):
        # rewritten only while it ends as Flask-Migrate's template does: a customised one
        # gets the new text to merge by hand
        return flask_change(project_dir, import_roots, STOCK_ENDING.search(text) is not None)
    changed = hand_over(text)
    if changed is not None:
        return EnvPyChange("stock", changed, "")
    return EnvPyChange(
        "custom",
        None,
        "not recognisably the env.py of `alembic init`: the orchestrator must be the one "
        "that configures Alembic's context. Keep what your env.py sets up (imports, models, "
        "logging) and replace what configures and runs the migrations (its "
        "`context.configure(...)` and `context.run_migrations()`, usually the offline/online "
        "dispatch at its end) with:\n" + HAND_OVER.strip("\n") + "\nwhere `target_metadata` is "
        "your models' MetaData (or None). The URL comes from environments/NAME.yaml, not from "
        "env.py.",
    )


def flask_env_py(db_module: str, db_name: str, models: list[str]) -> str:
    imports = "".join(
        f"import {m}  # noqa: F401 -- its models, so that {db_name}.metadata has their tables\n"
        for m in models
        if m != db_module
    )
    return (
        '"""Alembic environment (Flask-Migrate layout), handed over to the orchestrator:\n'
        "`flask db upgrade -x env=NAME`, plain `alembic` and `orchestrator migrate` all run\n"
        "through here, with or without a Flask application. The URL comes from\n"
        'environments/NAME.yaml (dev by default), not from the app\'s config."""\n'
        "\n"
        f"from {db_module} import {db_name}  # Flask-SQLAlchemy: its MetaData needs no app\n"
        f"{imports}"
        "from orchestrator.alembic_env import run_migrations\n"
        "\n"
        f"run_migrations(target_metadata={db_name}.metadata)\n"
    )


def flask_change(project_dir: Path, import_roots: list[Path], stock: bool) -> EnvPyChange:
    """Flask-Migrate's env.py: replaced where it is the template's, `db` was found and
    imports outside Flask."""
    found = find_db(project_dir)
    why = (
        "Flask-Migrate's env.py reads Flask's `current_app` (for the URL and the models), "
        'which exists only under `flask db ...`: outside Flask it raises "Working outside of '
        'application context". '
    )
    if found is None:
        text = flask_env_py("yourapp.extensions", "db", [])
        return EnvPyChange(
            "flask",
            None,
            why + "No `db = SQLAlchemy(...)` was found in the project: replace env.py with the "
            "following, naming the module that defines `db` and the ones that define your "
            "models:\n" + text,
        )
    db_module, db_name, models = found
    text = flask_env_py(db_module, db_name, models)
    problem = imports_outside_flask([db_module, *models], db_name, project_dir, import_roots)
    if problem is None and not stock:
        return EnvPyChange(
            "flask",
            None,
            why + "It is not Flask-Migrate's template as generated, so merge what you added "
            "to it into this (which imports outside Flask):\n" + text,
        )
    if problem is None:
        return EnvPyChange(
            "flask",
            text,
            why + f"It now takes the models' MetaData from {db_module}.{db_name} (imported "
            "outside Flask just now, without error).",
        )
    return EnvPyChange(
        "flask",
        None,
        why + f"{db_module} defines `{db_name} = SQLAlchemy(...)`, but importing it outside "
        f"Flask failed ({redact(problem)}): make it importable without an application (create the "
        "app in a factory, not at import), then replace env.py with:\n" + text,
    )


def find_db(project_dir: Path) -> tuple[str, str, list[str]] | None:
    """(module, name) of the first `NAME = SQLAlchemy(...)` in the project's own files
    (shallowest first), and the modules that define `db.Model` classes."""
    dbs: list[tuple[int, str, str]] = []
    models: list[str] = []
    for path in _project_files(project_dir):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        module = _module_name(path, project_dir)
        match = _DB.search(text)
        if match:
            dbs.append((len(path.relative_to(project_dir).parts), module, match["name"]))
        if _MODEL.search(text):
            models.append(module)
    if not dbs:
        return None
    _depth, module, name = min(dbs)
    return module, name, sorted(models)


def _project_files(project_dir: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(project_dir):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith((".", "__"))
            and d not in _SKIP_DIRS
            and not (Path(root) / d / "pyvenv.cfg").exists()
        )
        files += [Path(root) / n for n in sorted(names) if n.endswith(".py")]
    return files


def _module_name(path: Path, project_dir: Path) -> str:
    parts = list(path.relative_to(project_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_outside_flask(
    modules: list[str], db_name: str, project_dir: Path, import_roots: list[Path]
) -> str | None:
    """Import the modules in a fresh interpreter, as env.py will, and read `db.metadata`:
    None when that worked, else the error's last line."""
    code = (
        "import importlib, sys\n"
        f"mods = [importlib.import_module(m) for m in {modules!r}]\n"
        f"getattr(mods[0], {db_name!r}).metadata\n"
    )
    path = os.pathsep.join(
        [*(str(r) for r in import_roots), os.environ.get("PYTHONPATH", "")]
    ).strip(os.pathsep)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=project_dir,
            env={**os.environ, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"
