"""The one structlog configuration: JSON lines off a terminal, readable on one."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.secrets import redact_value


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: mask passwords in every value, database errors included."""
    return {key: redact_value(value) for key, value in event_dict.items()}


def add_timestamp(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: ISO-8601 UTC timestamp, keeping one an audit event already carries."""
    event_dict.setdefault("timestamp", utc_now())
    return event_dict


def utc_now() -> str:
    """Fixed-width UTC timestamp: sorts as text, round-trips exactly through any database."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wants_json(log_format: str, stream: Any = None) -> bool:
    if log_format != "auto":
        return log_format == "json"
    stream = stream or sys.stderr
    return not (hasattr(stream, "isatty") and stream.isatty())


def wants_color(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


# -- the console: one short line per event -------------------------------------------------

_state = {"console": False, "quiet": False}
_first_line: list[float] = []  # when the first console line was shown: elapsed counts from it

_GOOD = {"run.succeeded", "migration.applied", "migration.reverted", "gate.passed"}
_BAD = {"run.failed", "migration.failed", "run.refused", "gate.refused", "run.interrupted"}
# Alembic's own chatter that our events already say, shorter
_ALEMBIC_NOISE = ("Context impl", "Will assume", "Running upgrade", "Running downgrade")


def quiet() -> bool:
    return _state["quiet"]


def console_active() -> bool:
    """Whether stderr shows events to a person (so per-revision progress is worth a line)."""
    return _state["console"] and not _state["quiet"]


def _seconds(ms: Any) -> str:
    try:
        value = float(ms) / 1000
    except (TypeError, ValueError):
        return ""
    return f"{value:.1f} s" if value >= 1 else f"{float(ms):.0f} ms"


def _details(event: str, e: dict[str, Any]) -> str:
    """The few words that say what happened: revision, step, elapsed; never a whole record."""
    rev = str(e.get("revision") or "")[:12]
    if event == "run.started":
        start, to = str(e.get("from_revision") or "base"), str(e.get("to_revision") or "")
        ticket = f" ticket {e['ticket']}" if e.get("ticket") else ""
        move = f"{start[:12]} -> {to[:12]} " if to else ""  # no target (stamp, baseline...)
        return f"{move}run {e.get('run_id')}{ticket}"
    if event in ("migration.applied", "migration.reverted"):
        return f"{rev} {_seconds(e.get('duration_ms'))}".rstrip()
    if event == "migration.running":
        parts = [rev, f"({e.get('step')})", e.get("doc"), e.get("elapsed")]
        return " ".join(str(part) for part in parts if part)
    if event == "run.succeeded":
        applied = e.get("applied") or []
        done = f"{len(applied)} revision(s)" if applied else "nothing to do"
        return f"{done} in {_seconds(e.get('duration_ms'))}"
    if event == "gate.passed":
        return f"{len(e.get('revisions') or [])} revision(s) allowed"
    if event == "gate.refused":
        return f"{len(e.get('blocked') or [])} revision(s) blocked"
    if event in ("run.refused", "run.failed"):
        return "(why: below)" if event == "run.refused" else f"{rev} (why: below)".strip()
    if event == "migration.failed":
        return f"{rev} {e.get('error') or ''}".strip()
    if event == "lock.waiting":
        holder = e.get("holder") or {}
        who = holder.get("application_name") or holder.get("pid") or "another run"
        return f"held by {who}"
    if event == "lint.finding":  # the reason too: a bare rule name says nothing to act on
        return f"{rev} {e.get('rule')}: {e.get('message') or ''}".rstrip(": ")
    if event in ("lint.refused_later", "run.stopping"):
        return str(e.get("message") or "")
    if event in ("lock.acquired", "lock.released"):
        return ""
    if event == "fleet.target":
        total = int(e.get("done") or 0) + int(e.get("remaining") or 0)
        return f"{e.get('target')} {e.get('outcome')} ({e.get('done')}/{total})"
    keys = ("revision", "outcome", "error", "reason", "problem", "count")
    return " ".join(f"{k}={e[k]}" for k in keys if e.get(k) is not None)


class ShortConsoleRenderer:
    """`  1.2s  migration.applied  prod  c7e2f5a8d903 4 ms`: seconds since start, event,
    where, and a few words. Colour only where asked (a terminal without NO_COLOR)."""

    def __init__(self, colors: bool) -> None:
        self.colors = colors

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colors else text

    def __call__(self, _logger: Any, method: str, e: dict[str, Any]) -> str:
        event = str(e.get("event", ""))
        now = time.monotonic()
        _first_line[:] = _first_line or [now]
        elapsed = self._paint(f"{now - _first_line[0]:6.1f}s", "2")
        if e.get("logger") and not e.get("run_id"):  # Alembic or another library: its message
            return f"{elapsed}  {event}"
        where = str(e.get("env") or "")
        if e.get("target") and e.get("target") != where:
            where += f"/{e['target']}"
        code = "32" if event in _GOOD else "31" if event in _BAD else None
        if code is None and method in ("warning", "error"):
            code = "33"
        name = f"{event:<18}"
        name = self._paint(name, code) if code else name
        return f"{elapsed}  {name} {where}  {_details(event, e)}".rstrip()


def _quiet_filter(_logger: Any, _method: str, e: MutableMapping[str, Any]) -> Any:
    import structlog

    if _state["quiet"]:
        raise structlog.DropEvent
    return e


class _LibraryFilter(logging.Filter):
    """Stdlib records (Alembic's): none with --quiet; on the console, not the lines our own
    events already say."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _state["quiet"]:
            return False
        if _state["console"] and record.name.startswith("alembic"):
            return not record.getMessage().startswith(_ALEMBIC_NOISE)
        return True


def configure_logging(log_format: str = "auto", quiet: bool = False) -> None:
    """Off a terminal: one JSON object per line, Alembic's lines included. On a terminal
    (or --log-format console): one short line per event. `quiet`: no events at all."""
    import structlog

    as_json = wants_json(log_format)
    _state["console"], _state["quiet"] = not as_json, quiet
    shared: list[Any] = [
        structlog.processors.add_log_level,
        add_timestamp,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if as_json
        else ShortConsoleRenderer(colors=wants_color(sys.stderr))
    )
    structlog.configure(
        processors=[*shared, _quiet_filter, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Alembic (and anything else on stdlib logging) renders through the same chain, so
    # off a terminal every stderr line is one JSON object.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    # Python warnings (Alembic's `UserWarning: autoincrement ... only make sense for MySQL`)
    # are log records too, rendered like the rest: never raw text between JSON lines.
    logging.captureWarnings(True)
    handler.addFilter(_LibraryFilter())
    _ours.clear()
    _ours.update(
        handler=handler,
        levels={
            "": logging.WARNING,
            "alembic": logging.INFO,
            "alembic.runtime.plugins": logging.WARNING,
        },
    )
    reassert_logging()


# Our handler and the levels we set: put back after the project's env.py configured logging
_ours: dict[str, Any] = {}


def reassert_logging() -> None:
    """Our logging again, whatever the project's env.py set up meanwhile.

    env.py usually calls `logging.config.fileConfig(alembic.ini)` (Flask-Migrate's does, and
    `alembic init`'s): that puts a text handler on the root logger, sets Alembic's loggers to
    INFO and disables every logger it does not name. Off a terminal, every stderr line must
    stay one JSON object: our handler is the root's only one again, handlers that write to a
    stream are taken off the other loggers (their records reach ours), disabled loggers are
    enabled, and the levels we chose are back (Alembic quiet while nothing runs). Handlers
    that write to a file stay. A no-op until `configure_logging` ran."""
    handler = _ours.get("handler")
    if handler is None:
        return
    root = logging.getLogger()
    root.handlers = [handler]
    for logger in list(logging.root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue
        logger.disabled = False
        streams = [
            h
            for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
        for stream in streams:
            logger.removeHandler(stream)
        if streams:
            logger.propagate = True
    for name, level in _ours["levels"].items():
        logging.getLogger(name or None).setLevel(level)
    logging.captureWarnings(True)


@contextmanager
def kept_over_project_logging() -> Iterator[None]:
    """While the project's env.py runs: each `fileConfig`, `dictConfig` or `basicConfig` it
    calls is followed at once by `reassert_logging`, so that not even a line env.py logs
    right after configuring reaches stderr as text. Put back when env.py is done."""
    import logging.config

    saved = logging.config.fileConfig, logging.config.dictConfig, logging.basicConfig

    def then_ours(configure: Any) -> Any:
        def configured(*args: Any, **kwargs: Any) -> Any:
            try:
                return configure(*args, **kwargs)
            finally:
                reassert_logging()

        return configured

    if _ours:
        logging.config.fileConfig, logging.config.dictConfig, logging.basicConfig = (
            then_ours(f) for f in saved
        )
    try:
        yield
    finally:
        logging.config.fileConfig, logging.config.dictConfig, logging.basicConfig = saved
        reassert_logging()


@contextmanager
def quiet_alembic() -> Iterator[None]:
    """Alembic's INFO lines off, for work that migrates nothing a user owns (an offline
    render for lint, a scratch database): kept off even when env.py's fileConfig turns them
    on again, since `reassert_logging` restores this level."""
    logger = logging.getLogger("alembic")
    levels = _ours.get("levels")
    saved_level, saved_ours = logger.level, (levels or {}).get("alembic")
    logger.setLevel(logging.WARNING)
    if levels is not None:
        levels["alembic"] = logging.WARNING
    try:
        yield
    finally:
        logger.setLevel(saved_level)
        if levels is not None and saved_ours is not None:
            levels["alembic"] = saved_ours
