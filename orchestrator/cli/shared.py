"""What every command's rendering shares: the output (JSON or aligned tables, colour only
on a terminal), loading the project, one-paragraph errors."""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any


def load_app(collect: bool = True) -> Any:
    """The project, loaded. With `collect` False the collector stays off (if console_main
    turned it off): for commands that read a whole audit trail, whose hundreds of thousands
    of long-lived rows make no cycles, yet set off full collections that cost a third of
    their time."""
    from orchestrator.running.app import App

    if not gc.isenabled():  # console_main's imports are done: collect what the run makes
        gc.freeze()
        if collect:
            gc.enable()
    return App.load(interactive=True)


class Out:
    def __init__(self, as_json: bool, json_logs: bool = False) -> None:
        self.as_json = as_json
        self.json_logs = json_logs
        self.streamed: set[tuple[str, str]] = set()  # (env, target) results already printed
        self.color = "NO_COLOR" not in os.environ and sys.stdout.isatty()

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def json(self, data: Any) -> None:
        from orchestrator.core.secrets import redact_value

        print(json.dumps(redact_value(data), indent=2, default=str))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Columns aligned on what shows: colour codes take no room on a terminal."""
        from orchestrator.core.secrets import redact

        cells = [[("" if c is None else redact(str(c))) for c in row] for row in rows]
        widths = [max([len(h), *(visible_len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
        head = "  ".join(pad(h, w) for h, w in zip(headers, widths, strict=True))
        print(self.paint(head.rstrip(), "1"))
        for row in cells:
            print("  ".join(pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def pad(text: str, width: int) -> str:
    return text + " " * (width - visible_len(text))


def short(revs: Sequence[str] | None) -> str:
    return ",".join(r[:12] for r in revs) if revs else "base"


def wrap(text: str, indent: str = "") -> str:
    """Fill to the terminal's width (80 off a terminal), breaking only between words."""
    import shutil
    import textwrap

    width = max(40, shutil.get_terminal_size((80, 24)).columns - 1)
    return textwrap.fill(
        text, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def print_json_error(
    message: str, code: int, outcome: str, results: Sequence[Any] | None = None
) -> None:
    """`--json` never leaves stdout empty: a run command that reached databases prints their
    results (the last one refused or failed, each with outcome, message and exit_code);
    anything else prints one object with outcome, message and exit_code."""
    from orchestrator.core.secrets import redact, redact_value

    if results:
        data: Any = [redact_value(r.as_dict()) for r in results]
    else:
        data = {"outcome": outcome, "message": redact(message), "exit_code": code}
    print(json.dumps(data, indent=2, default=str), flush=True)


def report_error(message: str, code: int, as_json: bool) -> int:
    from orchestrator.core.secrets import redact

    message = redact(message)
    if as_json:
        import structlog

        from orchestrator.core.logging import configure_logging

        configure_logging("json")
        structlog.get_logger("orchestrator").error("command.error", error=message, exit_code=code)
    else:
        color = "NO_COLOR" not in os.environ and sys.stderr.isatty()
        prefix = "\033[31merror:\033[0m" if color else "error:"
        print(f"{prefix} {message}", file=sys.stderr)
    return code
