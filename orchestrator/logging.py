"""The one structlog configuration: JSON lines off a terminal, readable on one."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from orchestrator.secrets import redact_value


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


def configure_logging(log_format: str = "auto") -> None:
    import structlog

    as_json = wants_json(log_format)
    shared: list[Any] = [
        structlog.processors.add_log_level,
        add_timestamp,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=wants_color(sys.stderr))
    )
    structlog.configure(
        processors=[*shared, renderer],
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
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.INFO)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
