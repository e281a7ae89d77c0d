"""Pure policy: the promotion gate, drift, approval. Plain data in, plain data out."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LedgerEntry:
    revision: str
    checksum: str
    direction: str  # up | down | baseline | accepted
    run_id: str
    at: str
    env: str = ""
    actor: str = ""
    envelope: str | None = None  # DSSE envelope where the environment signs
    # canonical JSON {path: sha256} of the project files its run read; None: not observed
    reads: str | None = None

    @property
    def applied(self) -> bool:
        return self.direction in ("up", "baseline", "accepted")

    @property
    def files_read(self) -> dict[str, str] | None:
        """The files its run read (path -> sha256); None where the row records none (an
        older release, a baseline) or what it records is not such a mapping."""
        if self.reads is None:
            return None
        try:
            files = json.loads(self.reads)
        except ValueError:
            return None
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            return None
        return files

    def as_row(self) -> dict[str, str | None]:
        row = {
            "revision": self.revision,
            "checksum": self.checksum,
            "direction": self.direction,
            "run_id": self.run_id,
            "env": self.env,
            "actor": self.actor,
            "at": self.at,
            "envelope": self.envelope,
        }
        if self.reads is not None:  # signed with the row where it is there
            row["reads"] = self.reads
        return row


@dataclass(frozen=True)
class TargetState:
    """What one database of the predecessor has run: read once, judged here."""

    name: str
    applied: frozenset[str]  # ancestors of its current heads, inclusive
    ledger: Mapping[str, LedgerEntry] = field(default_factory=dict)
    # the predecessor's public keys (current and previous) where it signs; None: unsigned
    keys: tuple[Any, ...] | None = None
    env: str = ""  # the environment it belongs to (what its signed rows must name)
    # where it signs, from its verified evidence chain: why it cannot be believed (broken,
    # missing, rolled back), else per revision its newest entry (checksum, direction, run_id)
    broken: str | None = None
    proven: Mapping[str, tuple[str, str, str]] | None = None
    head: Mapping[str, Any] | None = None  # the chain head this verdict relied on
    snapshot: Mapping[str, Any] | None = None  # what the chain proved up to it (chain.snapshot)
    # checksum of env.py and the project modules it imports, at its last successful run
    env_py: str | None = None
    # (heads, dialect, fingerprint) of its live schema, where the read showed it as its last
    # run recorded it (the catalog stamp unchanged): the successor's schema check reads no more
    schema: tuple[tuple[str, ...], str, str] | None = None


@dataclass(frozen=True)
class Step:
    revision: str
    verdict: str  # allowed | blocked
    reason: str | None = None

    @property
    def blocked(self) -> bool:
        return self.verdict == "blocked"


FileDigest = Callable[[str], "str | None"]  # project-relative path -> sha256 now (None: gone)


def gate(
    revisions: Sequence[str],
    checksums: Mapping[str, str],
    predecessor: str | None,
    predecessor_targets: Sequence[TargetState],
    files: FileDigest | None = None,
) -> list[Step]:
    """Judge each revision a run would apply against what the predecessor has run.

    A revision passes only if every database of the predecessor has it applied now and
    recorded in its ledger with the checksum of the file that would run, and (with `files`)
    every file its run there read is the same now.
    """
    if predecessor is None:
        return [Step(rev, "allowed") for rev in revisions]
    steps = []
    for rev in revisions:
        reasons = [_why_not(rev, checksums[rev], t, files) for t in predecessor_targets]
        failing = [(t.name, r) for t, r in zip(predecessor_targets, reasons, strict=True) if r]
        if not predecessor_targets:
            steps.append(Step(rev, "blocked", f"{predecessor} has no database configured"))
        elif not failing:
            steps.append(Step(rev, "allowed"))
        else:
            steps.append(Step(rev, "blocked", _summarise(predecessor, failing)))
    return steps


def _why_not(
    rev: str, checksum: str, target: TargetState, files: FileDigest | None = None
) -> str | None:
    if target.broken is not None:  # nothing of it is believed
        return target.broken.replace("{", "{{").replace("}", "}}")
    entry = target.ledger.get(rev)
    if rev not in target.applied:
        return "rolled back on {where}" if entry is not None else "not run on {where}"
    if entry is None or not entry.applied:
        return (
            "not recorded in {where}'s ledger (migrated outside the orchestrator: "
            "adopt it with `orchestrator baseline`)"
        )
    if target.keys is not None:
        from orchestrator.core.trust import ledger_row_problem

        problem = ledger_row_problem(entry.as_row(), target.keys, target.env, target.name)
        if problem is not None:
            problem = problem.replace("{", "{{").replace("}", "}}")
            return "not signed by {where}'s key (its ledger row for it: " + problem + ")"
    if target.proven is not None:
        chained = target.proven.get(rev)
        if chained is None or chained != (entry.checksum, entry.direction, entry.run_id):
            return (
                "not run on {where} by its evidence chain (its ledger row for it is not the "
                "chain's newest entry for it: rows deleted, replayed or forged, or its "
                "evidence lay in a span `keys repair` gave up)"
            )
    if entry.direction == "accepted":
        return (
            "accepted on {where} (not run): its checksum was re-recorded there with "
            "`orchestrator accept`, the edited file never ran; run it on {where} first"
        )
    if entry.checksum != checksum:
        return (
            f"edited since {{where}} ran it (checksum {entry.checksum[:12]} there, "
            f"{checksum[:12]} now)"
        )
    if files is not None:
        changed = read_changes(entry.files_read or {}, files)
        if changed:
            return (
                f"reads {_braces(changed[0])}, which differs from what {{where}}'s run of it read"
                + (f" (and {len(changed) - 1} more file(s))" if len(changed) > 1 else "")
            )
    return None


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")  # kept through `.format(where=...)`


def read_changes(recorded: Mapping[str, str], files: FileDigest) -> list[str]:
    """The files of `recorded` (path -> sha256 a run read) that differ now, sorted."""
    return sorted(path for path, digest in recorded.items() if files(path) != digest)


def reads_refusal(
    revision: str, where: str, expected: Sequence[Mapping[str, str]], read: Mapping[str, str]
) -> str | None:
    """Why `revision` may not commit, having read `read` (path -> sha256) while it ran here,
    when its runs on the predecessor read `expected` (one mapping per database). A file
    read with other content is refused; so is a data file the predecessor's run did not
    read. A module (`.py`) is not: whether its import opens it depends on what ran before
    in the process, and its content is in the revision's checksum already."""
    for path, digest in sorted(read.items()):
        for recorded in expected:
            if path in recorded and recorded[path] != digest:
                return (
                    f"Refused: {revision} read {path} while it ran, and that file differs from "
                    f"what {where}'s run of it read (sha256 {recorded[path][:12]} there, "
                    f"{digest[:12]} here). {revision} was rolled back; restore the file as "
                    f"{where} ran it, or run the edited file on {where} first."
                )
            if path not in recorded and not path.endswith(".py"):
                return (
                    f"Refused: {revision} read {path} while it ran, which {where}'s run of it "
                    f"did not read. {revision} was rolled back; run it on {where} first."
                )
    return None


def env_py_difference(
    predecessor: str | None, mine: str | None, states: Sequence[TargetState]
) -> str | None:
    """What to say when this checkout's env.py (with the project modules it imports) is not
    the one the predecessor's last run used; None when it is, or nothing says."""
    if predecessor is None or mine is None:
        return None
    other = [s for s in states if s.env_py is not None and s.env_py != mine]
    if not other:
        return None
    where = (
        predecessor
        if [s.name for s in other] == [predecessor]
        else (f"{predecessor} ({', '.join(s.name for s in other)})")
    )
    return (
        f"env.py (or a project module it imports) differs from {where}'s last run: "
        f"{str(other[0].env_py)[:12]} there, {mine[:12]} here"
    )


def _summarise(predecessor: str, failing: list[tuple[str, str]]) -> str:
    if len(failing) == 1 and failing[0][0] == predecessor:
        return failing[0][1].format(where=predecessor)
    by_reason: dict[str, list[str]] = {}
    for name, reason in failing:
        by_reason.setdefault(reason, []).append(name)
    return "; ".join(
        reason.format(where=f"{predecessor} ({', '.join(names)})")
        for reason, names in by_reason.items()
    )


def drift(
    applied: frozenset[str], ledger: Mapping[str, LedgerEntry], checksums: Mapping[str, str]
) -> list[str]:
    """Applied revisions whose file differs from what this database recorded running."""
    return sorted(
        rev
        for rev in applied
        if (entry := ledger.get(rev)) is not None
        and entry.applied
        and rev in checksums
        and entry.checksum != checksums[rev]
    )


def ledger_heads(
    rows: Sequence[tuple[str, str, str]],
    parents: Callable[[str], Sequence[str]],
    ancestors: Callable[[str], set[str]],
) -> frozenset[str] | None:
    """Where the ledger says a database is: its rows (revision, direction, run_id) replayed
    in order. None when it has no rows. `baseline` and `stamped` rows of one run set the
    position outright (`base` for none); `up` and `down` move it one revision."""
    if not rows:
        return None
    heads: set[str] = set()
    group: tuple[str, str] | None = None
    for revision, direction, run_id in rows:
        if direction in ("baseline", "stamped"):
            if group != (run_id, direction):
                heads, group = set(), (run_id, direction)
            if revision != "base":
                heads.add(revision)
            continue
        group = None
        if direction == "up":
            heads = (heads - set(parents(revision))) | {revision}
        elif direction == "down":
            heads = (heads - {revision}) | set(parents(revision))
    # keep the tips: a baseline lists every ancestor, a down may leave a parent below a head
    below = set().union(*(ancestors(h) - {h} for h in heads)) if heads else set()
    return frozenset(heads - below)


def refusal_message(env: str, predecessor: str | None, steps: Sequence[Step]) -> str:
    blocked = [s for s in steps if s.blocked]
    lines = "; ".join(f"{s.revision}: {s.reason}" for s in blocked)
    name = env.split("/", 1)[0]  # `prod/acme`, one database of a fleet: promote the environment
    return (
        f"Refused: {env} may only run revisions that {predecessor} has run with the same "
        f"script. Blocked {len(blocked)} of {len(steps)}: {lines}. Migrate {predecessor} first "
        f"(or `orchestrator promote {name}` to go exactly as far as {predecessor})."
    )


@dataclass(frozen=True)
class PlanVerdict:
    """What `migrate` would do, in the order it checks: drift, gate, approval, lint."""

    blocker: str | None  # drift | schema | gate | lint | approval | None (runs / nothing to do)
    text: str  # the plan's last line, naming the blocker
    step_verdicts: Mapping[str, tuple[str, str | None]]  # revision -> (verdict, reason)


def plan_verdict(
    where: str,
    predecessor: str | None,
    revisions: Sequence[str],
    steps: Sequence[Step],
    drifted: Sequence[str],
    *,
    lint_mode: str,
    lint_findings: Sequence[object],
    lint_problem: str | None,
    requires_approval: bool,
    schema_drift: Sequence[str] = (),
) -> PlanVerdict:
    """The real blocker of a run, and each step's verdict with lint folded in."""
    verdicts: dict[str, tuple[str, str | None]] = {s.revision: (s.verdict, s.reason) for s in steps}
    lint_blocks: list[str] = []
    if lint_mode == "error":
        for finding in lint_findings:
            rev, rule = getattr(finding, "revision", ""), getattr(finding, "rule", "")
            if getattr(finding, "waived", False) or rev not in verdicts:
                continue
            lint_blocks.append(f"{rev} breaks {rule}")
            if verdicts[rev][0] == "allowed":
                message = str(getattr(finding, "message", "")).rstrip(".")
                verdicts[rev] = ("blocked", f"lint: {rule}: {message}")
    n = len(revisions)
    if drifted:
        return PlanVerdict(
            "drift",
            f"REFUSED (checksum drift): {', '.join(drifted)} changed since {where} ran it; "
            "restore the file as it ran",
            verdicts,
        )
    if schema_drift:
        return PlanVerdict(
            "schema",
            f"REFUSED (schema drift, policy.schema_drift: refuse): {where}'s live schema differs "
            f"from what its last run recorded ({schema_drift[0]}"
            + (f" and {len(schema_drift) - 1} more" if len(schema_drift) > 1 else "")
            + f"); see `orchestrator drift {where.split('/')[0]}`",
            verdicts,
        )
    blocked = [s for s in steps if s.blocked]
    if blocked:
        return PlanVerdict(
            "gate",
            f"REFUSED by the gate: {len(blocked)} of {n} revision(s) {where} may not run yet "
            f"({blocked[0].reason}); migrate {predecessor} first",
            verdicts,
        )
    if not n:
        return PlanVerdict(None, f"nothing to do: {where} is at the target", verdicts)
    if lint_mode == "error" and lint_problem is not None:
        return PlanVerdict("lint", f"REFUSED by lint: it could not run ({lint_problem})", verdicts)
    if lint_blocks:
        revisions_hit = len({block.split(" ", 1)[0] for block in lint_blocks})
        return PlanVerdict(
            "lint",
            f"REFUSED by lint: {len(lint_blocks)} finding(s) in {revisions_hit} revision(s); "
            "fix them, or waive them with the lines above",
            verdicts,
        )
    if requires_approval:
        return PlanVerdict(
            "approval",
            f"would run {n} revision(s) once approved: {where} requires --approve "
            "(or its name typed on a terminal)",
            verdicts,
        )
    return PlanVerdict(None, f"would run {n} revision(s)", verdicts)
