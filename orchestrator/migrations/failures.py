"""What failed in the project's own code, and where: env.py, or a revision's file."""

from __future__ import annotations

import traceback
from pathlib import Path

from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import redact


class EnvPyFailed(UsageError):
    """env.py (or a module it imports) raised before any revision ran (exit 2)."""


def env_py_message(exc: BaseException, env_py: Path) -> str:
    """`env.py failed ...: the error (line N of env.py[, raised at line M of FILE])`, with
    what to do; Flask's "outside of application context" gets its own advice."""
    frames = _frames(exc)
    target = env_py.resolve()
    lines = [f.lineno for f in frames if Path(f.filename).resolve() == target and f.lineno]
    where = f"line {lines[-1]} of {_shown(target)}" if lines else _shown(target)
    deepest = frames[-1] if frames else None
    if (
        deepest is not None
        and Path(deepest.filename).resolve() != target
        and _is_project_file(Path(deepest.filename))
    ):
        where += f", raised at line {deepest.lineno} of {_shown(Path(deepest.filename))}"
    elif isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() != target:
        where += f", line {exc.lineno} of {_shown(Path(exc.filename))}"
    text = str(exc)
    if "application context" in text or "current_app" in text:
        advice = (
            "env.py reads Flask's `current_app`, which exists only under `flask db ...`: "
            "`orchestrator init` prints the change that lets it run outside Flask (take the "
            "models' MetaData from the module that defines `db`)."
        )
    else:
        advice = (
            "No revision is at fault and none ran. Fix env.py or the module it imports "
            "(`python -c 'import <that module>'` from the project's directory shows the "
            "traceback), then run again."
        )
    return f"{_shown(target)} failed before any revision ran: {one_line(exc)} ({where}). {advice}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _is_project_file(path: Path) -> bool:
    """Not the standard library or an installed package: a file of the project."""
    import sysconfig

    text = str(path)
    if text.startswith("<") or "site-packages" in path.parts or "dist-packages" in path.parts:
        return False
    stdlib = sysconfig.get_paths()["stdlib"]
    return not text.startswith(stdlib)


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, its secrets redacted."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return redact(text)


def _frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(exc.__traceback__)) if exc.__traceback__ else []


def line_in_revision(exc: BaseException, path: str | None) -> str:
    """` (line N of FILE)`: the last line of the revision's own file the error went through."""
    if not path:
        return ""
    target = Path(path).resolve()
    lines = [f.lineno for f in _frames(exc) if Path(f.filename).resolve() == target]
    return f" (line {lines[-1]} of {target.name})" if lines and lines[-1] else ""


def revision_file_of(exc: BaseException, files: dict[Path, str]) -> tuple[Path, str] | None:
    """The revision file an import error came from: the outermost frame in one of `files`,
    or the file a SyntaxError names."""
    candidates = [Path(f.filename) for f in _frames(exc)]
    filename = getattr(exc, "filename", None)
    if isinstance(filename, str):
        candidates.append(Path(filename))
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved in files:
            return resolved, files[resolved]
    return None
