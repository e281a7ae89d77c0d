"""audit report: read the audit trail and the chains' verdicts, write one self-contained HTML
file for reviewers (Jinja2, autoescaped; the page's script and style are inline, pinned by a
Content-Security-Policy, so the file works from file:// and never touches the network)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup

from orchestrator import __version__
from orchestrator.commands import audit as audit_commands
from orchestrator.core.errors import UsageError
from orchestrator.core.report import MAX_RUNS, NO_END, OUTCOMES, Report, build_report
from orchestrator.core.textsafe import escape_controls
from orchestrator.evidence import ledger
from orchestrator.running.app import App

MAX_STEPS = 50  # revisions listed per run; the count is always whole


@dataclass(frozen=True)
class Written:
    path: Path
    report: Report
    verification: list[dict[str, Any]]
    unreachable: list[str]
    size: int

    @property
    def broken(self) -> list[dict[str, Any]]:
        return [v for v in self.verification if v.get("checked") and not v.get("intact")]


def write_report(
    app: App, flt: ledger.AuditFilter, filters: Sequence[tuple[str, str]], out: Path
) -> Written:
    """Read, build, render, write. `filters`: the options as the user gave them."""
    target = out.expanduser()
    if target.is_dir():
        raise UsageError(f"--out {out} is a directory; name the HTML file to write.")
    if not target.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {target.parent} does not exist.")
    events, unreachable, verification = audit_commands.review(app, flt)
    report = build_report(events, list(app.envs.order))
    html = render_html(
        report,
        verification,
        positions=positions(app, report.envs),
        filters=filters,
        unreachable=unreachable,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        version=__version__,
    )
    data = html.encode("utf-8")
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"Cannot write the report to {out}: {exc.strerror or exc}.") from None
    return Written(target, report, verification, unreachable, len(data))


# -- where each environment stands (read live: the events may be filtered) -----------------


def positions(app: App, envs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per environment: its current revision(s) and how many revisions it is behind its
    predecessor (None where either cannot be read or is not one position)."""
    from orchestrator.core.errors import OrchestratorError
    from orchestrator.db.database import current_heads
    from orchestrator.running.predecessor import read_connection

    heads: dict[str, set[tuple[str, ...]] | None] = {}
    for env in {*envs, *(app.envs.get(e).promotes_from for e in envs if e in app.envs.by_name)}:
        if env is None or env not in app.envs.by_name:
            continue
        try:
            found = set()
            for target in app.environment(env).targets:
                with read_connection(target) as connection:
                    found.add(current_heads(connection))
            heads[env] = found
        except OrchestratorError:
            heads[env] = None

    def applied(position: tuple[str, ...]) -> set[str]:
        graph = app.graph
        return set().union(*(graph.ancestors(h) for h in position if h in graph))

    out: dict[str, dict[str, Any]] = {}
    for env in envs:
        mine = heads.get(env)
        pred = app.envs.get(env).promotes_from if env in app.envs.by_name else None
        theirs = heads.get(pred) if pred else None
        behind = None
        if mine is not None and theirs is not None and len(mine) == 1 and len(theirs) == 1:
            behind = len(applied(next(iter(theirs))) - applied(next(iter(mine))))
        current = (
            "unknown (not readable)"
            if mine is None
            else " / ".join(sorted(",".join(h) or "base" for h in mine))
        )
        out[env] = {"current": current, "predecessor": pred, "behind": behind}
    return out


# -- rendering ---------------------------------------------------------------------------


def _asset(name: str) -> str:
    return (resources.files("orchestrator") / "templates" / name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def when(value: str | None) -> str:
    """`2026-12-01T05:14:03.123456Z` -> `2026-12-01 05:14:03` (the events' own UTC time)."""
    return value[:19].replace("T", " ") if value else ""


def duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _finalize(value: Any) -> Any:
    """Every value printed: None is blank, text shows its control characters as escapes."""
    if value is None:
        return ""
    if isinstance(value, Markup):  # the page's own script and style
        return value
    return escape_controls(value) if isinstance(value, str) else value


def render_html(
    report: Report,
    verification: Sequence[Mapping[str, Any]],
    *,
    positions: Mapping[str, Mapping[str, Any]] | None = None,
    filters: Sequence[tuple[str, str]],
    unreachable: Sequence[str],
    generated_at: str,
    version: str,
) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("orchestrator", "templates"),
        autoescape=True,  # a ticket of <script> is text
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.filters["short"] = lambda v: (v or "")[:12]
    script, style = _asset("report.js"), _asset("report.css")
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src {_csp_hash(style)}; script-src {_csp_hash(script)}; "
        "base-uri 'none'; form-action 'none'"
    )
    return env.get_template("report.html.j2").render(
        report=report,
        verification=verification,
        positions=positions or {},
        filters=filters,
        unreachable=unreachable,
        generated_at=generated_at,
        version=version,
        outcomes=[*OUTCOMES, NO_END],
        max_runs=MAX_RUNS,
        max_steps=MAX_STEPS,
        script=script,
        style=style,
        csp=csp,
    )
