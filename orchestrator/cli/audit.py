"""`audit`, `audit verify`, `audit report`: reading the trail."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from orchestrator.cli.args import AddCommand, count_arg, env_arg, rev_arg
from orchestrator.cli.shared import Out, load_app

AUDIT_EVENTS = [
    "run.started",
    "run.succeeded",
    "run.failed",
    "run.refused",
    "run.interrupted",
    "lock.waiting",
    "lock.acquired",
    "lock.released",
    "lock.lost",
    "gate.passed",
    "gate.refused",
    "migration.applied",
    "migration.reverted",
    "migration.failed",
    "migration.stamped",
    "checksum.accepted",
    "ledger.adopted",
    "schema.drifted",
    "schema.diverged",
]


def _events(prefix: str = "", **_kw: Any) -> list[str]:
    """Completion after `--event`: the audit trail's event names (never a file name)."""
    return [e for e in AUDIT_EVENTS if e.startswith(prefix)]


def register(add: AddCommand, common: argparse.ArgumentParser) -> None:
    p = add(
        "audit",
        "review the audit trail (newest last); `audit verify` checks the chain; "
        "`audit report --out FILE.html` writes a report for reviewers",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["verify", "report"],
        help="verify: check the hash chain; report: write an HTML report (--out)",
    )
    env_arg(p, "--env", help="only this environment (default: every environment)")
    p.add_argument("--since", metavar="30m|12h|7d|DATE", help="events at or after this time")
    p.add_argument("--until", metavar="30m|12h|7d|DATE", help="events before this time")
    p.add_argument("--actor", metavar="NAME", help="only runs by this actor")
    event = p.add_argument("--event", metavar="NAME", help="only this event, e.g. run.refused")
    event.completer = _events  # type: ignore[attr-defined]
    rev_arg(p, "--revision", help="only events about this revision")
    p.add_argument(
        "--outcome",
        choices=["succeeded", "failed", "refused", "interrupted"],
        help="only events with this outcome",
    )
    p.add_argument("--run", metavar="ID", help="only the events of this run id")
    p.add_argument("--limit", type=count_arg, metavar="N", help="keep the N most recent matches")
    p.add_argument(
        "--anchor",
        metavar="HASH",
        help="verify: fail unless a row has this hash (an audit_head kept from a run's result)",
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        help="table (default on a terminal), csv (a header row, one event per row), "
        "json (JSON lines, as --json)",
    )
    p.add_argument("--out", metavar="FILE.html", help="audit report: the file to write")


def cmd_audit(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands import audit as audit_commands
    from orchestrator.core.errors import UsageError

    if args.out is not None and args.action != "report":
        raise UsageError("--out names the file of `audit report`; other audit commands print.")
    if args.action is not None and args.format is not None:
        raise UsageError(f"--format is for listing events; `audit {args.action}` has no formats.")
    if out.as_json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format} disagree: give one of them.")
    app = load_app(collect=False)
    if args.action == "verify":
        return _audit_verify(app, args, out)
    if args.env:
        app.envs.get(args.env)
    flt = _audit_filter(args)
    if args.action == "report":
        return _audit_report(app, flt, args, out)
    events, unreachable = audit_commands.audit(app, flt)
    _warn_unreachable(unreachable)
    code = 1 if args.env and unreachable else 0  # the one env asked for could not be read
    fmt = args.format or ("json" if out.as_json else "table")
    if fmt == "json":
        for event in events:
            print(json.dumps(event, default=str))
        return code
    if fmt == "csv":
        sys.stdout.write(audit_commands.events_csv(events))
        return code
    from orchestrator.core.textsafe import escape_controls

    out.table(
        ["TIMESTAMP", "ENV", "EVENT", "OUTCOME", "REVISION", "ACTOR", "RUN", "DETAIL"],
        [
            [
                escape_controls(str(cell))
                for cell in (
                    e["timestamp"][:23].replace("T", " "),
                    e["env"] + (f"/{e['target']}" if e.get("target") else ""),
                    e["event"],
                    e.get("outcome") or "",
                    (e.get("revision") or "")[:12],
                    e["actor"],
                    e["run_id"],
                    _detail(e),
                )
            ]
            for e in events
        ],
    )
    return code


def _audit_filter(args: argparse.Namespace) -> Any:
    from orchestrator.commands.audit import parse_when
    from orchestrator.evidence.ledger import AuditFilter

    return AuditFilter(
        env=args.env,
        since=parse_when(args.since),
        until=parse_when(args.until),
        actor=args.actor,
        event=args.event,
        revision=args.revision,
        outcome=args.outcome,
        run_id=args.run,
        limit=args.limit,
    )


def _warn_unreachable(unreachable: Sequence[str]) -> None:
    if unreachable:  # a log event: off a terminal, every stderr line stays one JSON object
        import structlog

        for problem in unreachable:
            structlog.get_logger("orchestrator").warning("audit.not_read", problem=problem)


def _audit_verify(app: Any, args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands import audit as audit_commands

    if args.anchor is not None and not args.env:
        from orchestrator.core.errors import UsageError

        raise UsageError("--anchor HASH needs --env ENV: an anchor belongs to one trail.")
    results = audit_commands.verify(app, args.env, args.anchor)
    broken = [r for r in results if r.get("checked") and not r["intact"]]
    # a configured database we could not read is not proven intact
    unread = [r for r in results if not r["checked"] and r.get("configured", True)]
    if out.as_json:
        out.json(results)
    else:
        for r in results:
            where = r["env"] if r["target"] == r["env"] else f"{r['env']}/{r['target']}"
            if not r["checked"]:
                print(f"{where}: not checked ({r['error']})")
            elif r["intact"]:
                print(f"{where}: {out.paint('intact', '32')} ({r['rows']} rows, {r['proof']})")
            else:
                b = r["broken"]
                at = f"{b['kind']} {b['id']} ({b['timestamp']})" if b["id"] else b["kind"]
                print(out.paint(f"{where}: BROKEN at {at}: {b['problem']}", "31"))
    return 1 if broken or unread else 0


def _audit_report(app: Any, flt: Any, args: argparse.Namespace, out: Out) -> int:
    from pathlib import Path

    from orchestrator.commands.report import write_report
    from orchestrator.core.errors import UsageError

    if not args.out:
        raise UsageError("audit report needs --out FILE.html: the file to write the report to.")
    filters = []
    for flag, given, resolved in (
        ("--env", args.env, None),
        ("--since", args.since, flt.since),
        ("--until", args.until, flt.until),
        ("--actor", args.actor, None),
        ("--event", args.event, None),
        ("--revision", args.revision, None),
        ("--outcome", args.outcome, None),
        ("--run", args.run, None),
        ("--limit", None if args.limit is None else str(args.limit), None),
    ):
        if given is not None:
            shown = given if resolved in (None, given) else f"{given} (from {resolved})"
            filters.append((flag, shown))
    written = write_report(app, flt, filters, Path(args.out))
    _warn_unreachable(written.unreachable)
    report = written.report
    summary = {
        "report": str(written.path),
        "bytes": written.size,
        "events": report.events,
        "runs": report.runs_total,
        "runs_shown": report.runs_shown,
        "broken": [f"{b['env']}/{b['target']}" for b in written.broken],
    }
    if out.as_json:
        out.json(summary)
    else:
        capped = (
            f", the {report.runs_shown} most recent shown"
            if report.runs_shown < report.runs_total
            else ""
        )
        print(
            f"Report written to {written.path}: {report.events} events, "
            f"{report.runs_total} runs{capped}."
        )
        for b in written.broken:
            where = b["env"] if b["target"] == b["env"] else f"{b['env']}/{b['target']}"
            at = f"{b['broken'].get('kind', 'row')} {b['broken']['id'] or ''}".strip()
            print(out.paint(f"{where}: audit chain BROKEN at {at}", "31"))
    # as `audit verify`: a broken chain, or the one environment asked for unread, is a failure
    return 1 if written.broken or (args.env and written.unreachable) else 0


def _detail(event: dict[str, Any]) -> str:
    for key in ("error", "reason", "ticket"):
        if event.get(key):
            return str(event[key])[:80]
    if event.get("to_revision"):
        return f"-> {str(event['to_revision'])[:12]}"
    return ""
