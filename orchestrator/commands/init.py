"""`orchestrator init`: adopt an existing Alembic project (made by `alembic init`).

It writes one environment file per environment, chained in the order given, and hands the
project's `env.py` over to the orchestrator with the smallest change that does it. It never
overwrites a file, never touches `versions/`, and with `--dry-run` writes nothing. The
existing databases are then adopted with `orchestrator baseline`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import UsageError

DEFAULT_ENVS = ("dev", "staging", "prod")

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


@dataclass(frozen=True)
class Action:
    path: str
    action: str  # write | keep | hand over | change by hand | already handed over
    detail: str = ""
    content: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "action": self.action, "detail": self.detail}


def variable(env: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", env.upper()) + "_DATABASE_URL"


def environment_file(env: str, predecessor: str | None, last: bool) -> str:
    """The YAML of one environment: the first has an embedded SQLite default, the last is
    production-strict, the ones between are staging-like."""
    lines = [f"name: {env}"]
    if predecessor:
        lines.append(f"promotes_from: {predecessor}   # only revisions {predecessor} has run")
    lines += ["database:", f"  url_env: {variable(env)}"]
    if predecessor is None:
        lines.append(f"  url: sqlite:///.orchestrator/{env}.db   # when {variable(env)} is unset")
    lines += ["lock:", "  timeout: 60"]
    if last and predecessor is not None:
        policy = [
            "require_approval: true",
            "allow_downgrade: false",
            "lint: error",
            "schema_drift: refuse",
        ]
    elif predecessor is not None:
        policy = [
            "require_approval: false",
            "allow_downgrade: true",
            "lint: warn",
            "schema_drift: warn",
        ]
    else:
        policy = [
            "require_approval: false",
            "allow_downgrade: true",
            "lint: warn",
            "schema_drift: warn",
        ]
    lines += ["policy:", *(f"  {p}" for p in policy)]
    if predecessor is not None:
        lines += ["session:", "  lock_timeout: 5s", "  statement_timeout: 15min"]
    return "\n".join(lines) + "\n"


def hand_over(text: str) -> str | None:
    """env.py with its last block replaced by the hand-over, or None if it is not stock."""
    if "target_metadata" not in text:
        return None
    match = STOCK_ENDING.search(text)
    if match is None:
        return None
    return text[: match.start()].rstrip("\n") + "\n\n" + HAND_OVER


def plan_init(
    environments_dir: Path, env_py: Path, envs: list[str], project_dir: Path
) -> list[Action]:
    """What `init` would do; pure but for reading the files it would touch."""
    actions = []
    for index, env in enumerate(envs):
        path = environments_dir / f"{env}.yaml"
        shown = _show(path, project_dir)
        if path.exists():
            actions.append(Action(shown, "keep", "exists; not overwritten"))
            continue
        predecessor = envs[index - 1] if index else None
        content = environment_file(env, predecessor, last=index == len(envs) - 1)
        actions.append(Action(shown, "write", f"reads {variable(env)}", content))
    shown = _show(env_py, project_dir)
    text = env_py.read_text(encoding="utf-8")
    if "orchestrator.alembic_env" in text:
        actions.append(Action(shown, "already handed over"))
        return actions
    changed = hand_over(text)
    if changed is None:
        actions.append(
            Action(
                shown,
                "change by hand",
                "not recognisably the env.py of `alembic init`; replace its last block "
                "(the offline/online dispatch) with:\n" + HAND_OVER.strip("\n"),
            )
        )
    else:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                changed.splitlines(keepends=True),
                f"a/{shown}",
                f"b/{shown}",
            )
        )
        actions.append(Action(shown, "hand over", diff, changed))
    return actions


def apply_init(actions: list[Action], project_dir: Path) -> None:
    for action in actions:
        if action.action not in ("write", "hand over"):
            continue
        path = project_dir / action.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if action.action == "write":
            with path.open("x", encoding="utf-8") as file:  # "x": never overwrite
                file.write(action.content)
        else:
            path.write_text(action.content, encoding="utf-8")


def init(
    project_dir: Path, environments_dir: Path, alembic_ini: Path, envs: list[str], dry_run: bool
) -> list[Action]:
    from orchestrator.migrations.runner import AlembicProject

    if not alembic_ini.is_file():
        raise UsageError(
            f"No {alembic_ini} here: run `orchestrator init` in the directory of your Alembic "
            "project (the one `alembic init` made), or set ORCHESTRATOR_ALEMBIC_INI."
        )
    bad = [e for e in envs if not re.fullmatch(r"[A-Za-z0-9_.-]+", e)]
    if not envs or bad or len(set(envs)) != len(envs):
        raise UsageError(
            f"--envs {','.join(envs)!r}: give distinct names (letters, digits, _ . -), in "
            "promotion order, e.g. --envs dev,staging,prod."
        )
    env_py = AlembicProject(alembic_ini).script_location / "env.py"
    if not env_py.is_file():
        raise UsageError(f"{env_py} does not exist: is script_location in {alembic_ini} right?")
    actions = plan_init(environments_dir, env_py, envs, project_dir)
    if not dry_run:
        apply_init(actions, project_dir)
    return actions


def _show(path: Path, project_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_dir.resolve()))
    except ValueError:
        return str(path)
