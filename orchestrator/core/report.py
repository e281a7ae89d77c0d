"""The audit report's content, built from audit events alone: runs per environment, the
revision x environment matrix, per-environment summaries. Pure: plain data in, plain data out;
no database, no rendering (commands/report.py renders it).

Every value shown comes from an event's field; where the events say nothing (a run whose end
is not among them, a revision one environment never ran) the report says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("succeeded", "failed", "refused", "interrupted")
NO_END = "no end"  # a run whose terminal event is not among the events read
TERMINAL = {"run.succeeded", "run.failed", "run.refused", "run.interrupted"}
# Rows in the HTML: more would make a file nobody can open; the counts stay complete.
MAX_RUNS = 2000
MAX_REVISIONS = 500


@dataclass(slots=True)
class LockWait:
    timestamp: str
    holder: str


@dataclass(slots=True)
class Step:
    """A revision a run applied or reverted (migration.applied / migration.reverted)."""

    revision: str
    direction: str  # applied | reverted
    checksum: str | None
    timestamp: str
    duration_ms: int | None
    to_revision: str | None = None  # where the database stood once the step committed


@dataclass(slots=True)
class Run:
    run_id: str
    env: str
    target: str | None = None
    command: str | None = None
    started: str | None = None  # run.started's timestamp; else the first event read
    ended: str | None = None
    actor: str | None = None
    ticket: str | None = None
    git_sha: str | None = None
    from_revision: str | None = None
    to_revision: str | None = None
    outcome: str = NO_END
    duration_ms: int | None = None
    approval: str | None = None
    plan_approvals: list[str] = field(default_factory=list)  # keys that approved its plan
    git_dirty: bool = False  # what ran had changes git did not hold (git_sha is not all of it)
    forced: bool = False
    reason: str | None = None  # the downgrade's or baseline's --reason
    waivers: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # run.refused's message, gate's blocks
    errors: list[str] = field(default_factory=list)  # migration.failed / run.failed
    lock_waits: list[LockWait] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    interrupted: str | None = None  # run.interrupted's reason
    noticed_by: str | None = None  # the run that recorded this one as interrupted
    events: int = 0

    @property
    def approved_by(self) -> str:
        """Who approved, not only how: the plan's approving keys, or the person who ran it
        with --approve or typed the environment's name."""
        if self.plan_approvals:
            return "plan approved by " + ", ".join(self.plan_approvals)
        if self.approval == "typed":
            return f"{self.actor} (typed the environment's name)"
        if self.approval:
            return f"{self.actor} ({self.approval})"
        return ""

    @property
    def refusal_line(self) -> str:
        """The first refusal in one line (the whole text is one click away)."""
        first = self.refusals[0] if self.refusals else ""
        first = " ".join(first.split())
        return first if len(first) <= 160 else first[:157] + "..."

    @property
    def reached(self) -> str | None:
        """Where the run left the database: its last committed step's destination."""
        return self.steps[-1].to_revision if self.steps else None

    @property
    def search_text(self) -> str:
        """What the report's search box matches against."""
        parts = [
            self.run_id,
            self.env,
            self.target,
            self.command,
            self.actor,
            self.ticket,
            self.git_sha,
            self.from_revision,
            self.to_revision,
            self.outcome,
            self.approval,
            self.reason,
            self.interrupted,
            *self.waivers,
            *self.refusals,
            *self.errors,
            *(s.revision for s in self.steps),
        ]
        return " ".join(p for p in parts if p).lower()


@dataclass(slots=True)
class Cell:
    """What one environment did with one revision: its latest apply and revert."""

    applied: str | None = None
    applied_checksum: str | None = None
    applied_run: str | None = None
    reverted: str | None = None
    reverted_run: str | None = None
    targets: set[str] = field(default_factory=set)
    by_target: dict[str | None, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.applied and (not self.reverted or self.applied >= self.reverted):
            return "applied"
        return "reverted"


@dataclass(slots=True)
class MatrixRow:
    revision: str
    first_seen: str
    cells: dict[str, Cell]
    checksums: set[str]

    @property
    def agreement(self) -> str:
        """agree (every environment that applied it ran the same file), differ, or single."""
        if len(self.checksums) > 1:
            return "differ"
        applied_in = sum(1 for c in self.cells.values() if c.applied_checksum)
        return "agree" if applied_in > 1 else "single"


@dataclass(slots=True)
class EnvSummary:
    env: str
    runs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    last_change: Run | None = None  # the newest run that committed a change, any outcome
    shown: int = 0  # runs in the timeline (the most recent ones)


@dataclass(slots=True)
class Report:
    envs: list[str]
    runs: dict[str, list[Run]]  # env -> runs shown, newest first
    summaries: dict[str, EnvSummary]
    matrix: list[MatrixRow]  # newest first
    revisions_total: int
    events: int
    first_event: str | None
    last_event: str | None
    runs_total: int
    runs_shown: int


def _holder_text(holder: Any) -> str:
    if not isinstance(holder, Mapping):
        return "" if holder is None else str(holder)
    parts = [
        str(holder[k])
        for k in ("application_name", "pid", "client_addr", "since")
        if holder.get(k) not in (None, "")
    ]
    return ", ".join(parts)


def _blocked_text(blocked: Any) -> list[str]:
    if not isinstance(blocked, list):
        return []
    return [
        f"{b.get('revision')}: {b.get('reason')}" if isinstance(b, Mapping) else str(b)
        for b in blocked
    ]


_RUN_FIELDS = frozenset({"target", "command", "actor", "ticket", "git_sha", "approval"})


def _run_fields(run: Run, e: Mapping[str, Any]) -> None:
    """The fields every event of a run carries (and approval, from when it is given)."""
    for attr in _RUN_FIELDS.intersection(e):
        if getattr(run, attr) is None and e[attr] is not None:
            setattr(run, attr, str(e[attr]))
    if not run.waivers and isinstance(e.get("waivers"), list):
        run.waivers = [str(w) for w in e["waivers"]]
    if not run.plan_approvals and isinstance(e.get("plan_approvals"), list):
        run.plan_approvals = [str(k) for k in e["plan_approvals"]]


def collect_runs(events: Iterable[Mapping[str, Any]]) -> list[Run]:
    """Pure: events (oldest first) grouped into runs, in the order each run was first seen."""
    runs: dict[str, Run] = {}
    for e in events:
        run_id = str(e.get("run_id") or "")
        run = runs.get(run_id)
        if run is None:
            run = runs[run_id] = Run(run_id=run_id, env=str(e.get("env") or ""))
            run.started = e.get("timestamp")
            _run_fields(run, e)
        elif (
            (run.approval is None and "approval" in e)
            or (not run.waivers and "waivers" in e)
            or (not run.plan_approvals and "plan_approvals" in e)
        ):
            _run_fields(run, e)  # approval is recorded from when it is given
        run.events += 1
        if e.get("git_dirty") is True:  # on every event of the run from where it is known
            run.git_dirty = True
        name = e.get("event")
        if name == "run.started":
            run.started = e.get("timestamp")
            run.from_revision = _text(e.get("from_revision"))
            run.to_revision = _text(e.get("to_revision"))
            run.reason = _text(e.get("reason"))
            run.forced = bool(e.get("forced"))
        elif name in ("migration.applied", "migration.reverted"):
            run.steps.append(
                Step(
                    revision=str(e.get("revision")),
                    direction="applied" if name == "migration.applied" else "reverted",
                    checksum=_text(e.get("checksum")) or None,
                    timestamp=str(e.get("timestamp")),
                    duration_ms=_ms(e.get("duration_ms")),
                    to_revision=_text(e.get("to_revision")),
                )
            )
        elif name == "lock.waiting":
            run.lock_waits.append(LockWait(str(e.get("timestamp")), _holder_text(e.get("holder"))))
        elif name == "gate.refused":
            run.refusals.extend(_blocked_text(e.get("blocked")))
        elif name == "migration.failed" and e.get("error"):
            run.errors.append(f"{e.get('revision')}: {e['error']}")
        if name in TERMINAL:
            run.outcome = str(e.get("outcome") or name.split(".", 1)[1])
            run.ended = e.get("timestamp")
            if _ms(e.get("duration_ms")) is not None:
                run.duration_ms = e["duration_ms"]
            if name == "run.refused" and e.get("error"):
                run.refusals.append(str(e["error"]))
            elif name == "run.failed" and e.get("error"):
                run.errors.append(str(e["error"]))
                if e.get("holder"):
                    run.lock_waits.append(
                        LockWait(str(e.get("timestamp")), _holder_text(e["holder"]))
                    )
            elif name == "run.interrupted":
                run.interrupted = _text(e.get("reason"))
                run.noticed_by = _text(e.get("noticed_by"))
            if run.to_revision is None and e.get("to_revision"):
                run.to_revision = str(e["to_revision"])
    return list(runs.values())


# An event's fields as the report's types: a row written by hand may hold anything there.
def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _ms(value: Any) -> int | None:
    return value if type(value) is int else None


def build_matrix(runs: Sequence[Run]) -> list[MatrixRow]:
    """Pure: per revision, when each environment last applied (and reverted) it, and the
    checksums the environments recorded for it; newest revision first."""
    rows: dict[str, MatrixRow] = {}
    for run in runs:
        for step in run.steps:
            row = rows.get(step.revision)
            if row is None:
                row = rows[step.revision] = MatrixRow(step.revision, step.timestamp, {}, set())
            row.first_seen = min(row.first_seen, step.timestamp)
            cell = row.cells.setdefault(run.env, Cell())
            if run.target:
                cell.targets.add(run.target)
            if step.direction == "applied":
                if cell.applied is None or step.timestamp >= cell.applied:
                    cell.applied, cell.applied_run = step.timestamp, run.run_id
                    cell.applied_checksum = step.checksum
                latest = cell.by_target.get(run.target)
                if latest is None or step.timestamp >= latest[0]:
                    cell.by_target[run.target] = (step.timestamp, step.checksum)
            elif cell.reverted is None or step.timestamp >= cell.reverted:
                cell.reverted, cell.reverted_run = step.timestamp, run.run_id
    for row in rows.values():
        # each database's latest apply counts: a fleet whose databases ran different files
        # disagrees with itself
        row.checksums = {
            checksum
            for cell in row.cells.values()
            for _, checksum in cell.by_target.values()
            if checksum
        }
    return sorted(rows.values(), key=lambda r: r.first_seen, reverse=True)


def build_report(
    events: Sequence[Mapping[str, Any]],
    env_order: Sequence[str] = (),
    max_runs: int = MAX_RUNS,
    max_revisions: int = MAX_REVISIONS,
) -> Report:
    """Pure: the report's content from events (oldest first). Environments in `env_order`
    first (promotion order), then any others the events name. Each environment's timeline
    keeps its most recent runs, `max_runs` shared among the environments; counts stay whole."""
    runs = collect_runs(events)
    seen = list(dict.fromkeys(r.env for r in runs))
    envs = [e for e in env_order if e in seen] + [e for e in seen if e not in env_order]
    by_env: dict[str, list[Run]] = {e: [] for e in envs}
    for run in runs:
        by_env[run.env].append(run)
    per_env = max(max_runs // max(len(envs), 1), 1)
    summaries: dict[str, EnvSummary] = {}
    shown: dict[str, list[Run]] = {}
    for env in envs:
        ordered = sorted(by_env[env], key=lambda r: r.started or "", reverse=True)
        summary = EnvSummary(env=env, runs=len(ordered))
        for run in ordered:
            summary.outcomes[run.outcome] = summary.outcomes.get(run.outcome, 0) + 1
            # an interrupted or failed run that committed revisions changed it too
            if summary.last_change is None and run.steps:
                summary.last_change = run
        shown[env] = ordered[:per_env]
        summary.shown = len(shown[env])
        summaries[env] = summary
    matrix = build_matrix(runs)
    timestamps = [str(e["timestamp"]) for e in events if e.get("timestamp")]
    return Report(
        envs=envs,
        runs=shown,
        summaries=summaries,
        matrix=matrix[:max_revisions],
        revisions_total=len(matrix),
        events=len(events),
        first_event=min(timestamps) if timestamps else None,
        last_event=max(timestamps) if timestamps else None,
        runs_total=len(runs),
        runs_shown=sum(len(v) for v in shown.values()),
    )
