"""audit and audit verify: review the trail, and prove nobody edited it."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from orchestrator.core import trust
from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.db.database import current_heads
from orchestrator.evidence import ledger
from orchestrator.running.app import App
from orchestrator.running.predecessor import read_connection

_RELATIVE = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")


def parse_when(value: str | None, now: datetime | None = None) -> str | None:
    """`90s`, `30m`, `12h`, `7d`, `2w`, or an ISO date/time -> our fixed-width UTC text."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        unit_name = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        try:
            moment = now - timedelta(**{unit_name[unit]: amount})
        except (OverflowError, ValueError):  # beyond year 1: no time is that far back
            raise UsageError(
                f"{value!r} reaches back beyond any date: use a shorter duration "
                "(30m, 12h, 7d, 2w) or a date such as 2026-11-01."
            ) from None
    else:
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"{value!r} is not a time: use 90s, 30m, 12h, 7d, 2w or a date such as 2026-11-01."
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit(app: App, flt: ledger.AuditFilter) -> tuple[list[dict[str, Any]], list[str]]:
    """Matching events from every reachable database, and the ones we could not read."""
    names = [flt.env] if flt.env else list(app.envs.order)
    events: list[dict[str, Any]] = []
    unreachable: list[str] = []
    for name in names:
        try:
            targets = app.environment(name).targets
        except UsageError as exc:
            if flt.env:
                raise
            unreachable.append(f"{name}: {exc.message}")
            continue
        for target in targets:
            try:
                with read_connection(target) as connection:
                    found = ledger.query_audit(connection, flt)
            except OrchestratorError as exc:
                unreachable.append(f"{target.env}/{target.name}: {exc.message}")
                continue
            for event in found:
                event.pop("id", None)
            events.extend(found)
    events.sort(key=lambda e: e["timestamp"])
    if flt.limit is not None:
        events = events[-flt.limit :] if flt.limit else []
    return events, unreachable


def verify(app: App, env_name: str | None, anchor: str | None = None) -> list[dict[str, Any]]:
    """Each database's chain verdict (`audit verify`); with `anchor`, a hash that must still
    be in the chain."""
    return [verdict for verdict, _ in _chains(app, env_name, decode=False, anchor=anchor)]


def review(
    app: App, flt: ledger.AuditFilter
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """`audit` and `verify` at once, reading each database's chain once: the matching events
    (oldest first), the databases we could not read, and each chain's verdict."""
    events: list[dict[str, Any]] = []
    unreachable: list[str] = []
    results: list[dict[str, Any]] = []
    for verdict, records in _chains(app, flt.env, decode=True):
        results.append(verdict)
        if not verdict["checked"]:
            where = (
                verdict["env"]
                if verdict.get("configured") is False
                else f"{verdict['env']}/{verdict['target']}"
            )
            unreachable.append(f"{where}: {verdict['error']}")
        events.extend(r for r in records if ledger.event_matches(flt, r))
    events.sort(key=lambda e: e["timestamp"])
    if flt.limit is not None:
        events = events[-flt.limit :] if flt.limit else []
    return events, unreachable, results


def _chains(
    app: App, env_name: str | None, decode: bool, anchor: str | None = None
) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Per database of `env_name` (else of every environment): its chain's verdict, and with
    `decode` its events as recorded (all of them, those after a broken row too)."""
    names = [env_name] if env_name else list(app.envs.order)
    found: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for name in names:
        try:
            targets = app.environment(name).targets
        except UsageError as exc:
            if env_name:
                raise
            found.append(
                (
                    {
                        "env": name,
                        "target": name,
                        "checked": False,
                        "configured": False,
                        "error": exc.message,
                    },
                    [],
                )
            )
            continue
        keys = app.environment(name).public_keys
        for target in targets:
            try:
                with read_connection(target) as connection:
                    rows = ledger.read_chain(connection)
                    broken, records = ledger.check_chain(rows, decode_all=decode)
                    broken, proof = signed_verdict(
                        connection, name, target.name, keys, rows, broken
                    )
            except OrchestratorError as exc:
                verdict = {"env": name, "target": target.name, "checked": False}
                found.append(({**verdict, "error": exc.message}, []))
                continue
            if broken is None and anchor is not None:
                broken = anchor_problem(rows, anchor)
            verdict = {
                "env": name,
                "target": target.name,
                "checked": True,
                "rows": len(rows),
                "intact": broken is None,
                "signed": keys is not None,
                "proof": proof,
                "broken": None if broken is None else broken.__dict__,
            }
            found.append((verdict, records if decode else []))
    return found


# The columns of `audit --format csv`, in this order; keys no column names follow, sorted.
CSV_COLUMNS = (
    "timestamp",
    "event",
    "run_id",
    "env",
    "target",
    "actor",
    "outcome",
    "command",
    "revision",
    "from_revision",
    "to_revision",
    "checksum",
    "duration_ms",
    "ticket",
    "reason",
    "error",
    "git_sha",
    "approval",
    "waivers",
    "lock_key",
    "holder",
)


def csv_cell(value: Any) -> str:
    """Text as it is; numbers, lists and objects as JSON text (so a cell reads back exactly)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def events_csv(events: Iterable[Mapping[str, Any]]) -> str:
    """Pure: a header row, then one row per event, RFC 4180 quoting (CRLF line ends).

    An empty cell: the event has no such field."""
    events = list(events)
    extra = sorted({k for e in events for k in e} - set(CSV_COLUMNS))
    columns = [*CSV_COLUMNS, *extra]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # csv's default quoting: QUOTE_MINIMAL
    writer.writerow(columns)
    for event in events:
        writer.writerow([csv_cell(event[c]) if c in event else "" for c in columns])
    return buffer.getvalue()


def verify_target(
    connection: Connection, env: str, target: str, keys: tuple[Any, ...] | None
) -> tuple[ledger.BrokenRow | None, list[dict[str, Any]], str]:
    """The first broken row (or checkpoint, or ledger row) of one database's trail, its audit
    rows, and what the verdict rests on."""
    rows = ledger.read_chain(connection)
    broken, proof = signed_verdict(connection, env, target, keys, rows, ledger.verify_chain(rows))
    return broken, rows, proof


def signed_verdict(
    connection: Connection,
    env: str,
    target: str,
    keys: tuple[Any, ...] | None,
    rows: list[dict[str, Any]],
    broken: ledger.BrokenRow | None,
) -> tuple[ledger.BrokenRow | None, str]:
    """The chain's verdict, completed by the signed checkpoints where `env` signs."""
    if keys is None:
        return broken, "hash chain only: unsigned, a writer of the database can re-hash it"
    if broken is not None:
        return broken, "hash chain"
    checkpoints = ledger.read_checkpoints(connection)
    finding = trust.verify_signed_trail(
        audit_rows=rows,
        checkpoints=checkpoints,
        ledger_rows=ledger.ledger_table_rows(connection),
        keys=keys,
        env=env,
        target=target,
        at_revision=bool(current_heads(connection)),
    )
    proof = f"signed: {len(checkpoints)} checkpoint(s) verified"
    if finding is not None:
        return ledger.BrokenRow(finding.id, finding.timestamp, finding.problem, finding.kind), proof
    # Part 2's checkpoints hold: now the chain (Part 3)
    evidence, problem = chain_verdict(connection, env, keys)
    if problem is not None:
        seq = evidence.verdict.broken[0] if evidence.verdict.broken else None
        return ledger.BrokenRow(seq, None, problem, "entry" if seq else "database"), "chain"
    head = evidence.verdict.head
    if head is None:
        return None, "nothing recorded yet"
    return None, f"signed chain verified up to entry {head[0]}; {proof}"


def chain_verdict(
    connection: Connection, env: str, keys: tuple[Any, ...]
) -> tuple[Any, str | None]:
    """A signing database's evidence chain, verified; the audit rows since its last end
    entry proven; its ledger table matching what the chain says. Why not, else None."""
    from orchestrator.evidence import chain as store
    from orchestrator.evidence.audit_proof import prove_audit
    from orchestrator.running.liveness import live_run_ids

    evidence = store.read_evidence(connection, keys, env)
    if evidence.problem is not None:
        return evidence, evidence.problem
    proof = prove_audit(connection, evidence, None, live_run_ids(connection))
    if proof.problem is not None:
        return evidence, f"{env}'s audit trail does not verify: {proof.problem}"
    return evidence, store.ledger_problem(connection, evidence)


def anchor_problem(rows: list[dict[str, Any]], anchor: str) -> ledger.BrokenRow | None:
    """A hash kept from an earlier run (its `audit_head`) must still be in the chain."""
    wanted = anchor.strip().lower()
    if any(row["hash"] == wanted for row in rows):
        return None
    last = rows[-1] if rows else None
    return ledger.BrokenRow(
        None,
        None,
        f"no row has the anchor hash {wanted[:16]}...: the rows up to it were removed "
        f"(the table ends at row {last['id'] if last else 'none'}), or the anchor belongs to "
        "another environment",
        "anchor",
    )
