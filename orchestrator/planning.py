"""Pure policy: the promotion gate, drift, approval. Plain data in, plain data out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LedgerEntry:
    revision: str
    checksum: str
    direction: str  # up | down | baseline
    run_id: str
    at: str

    @property
    def applied(self) -> bool:
        return self.direction in ("up", "baseline")


@dataclass(frozen=True)
class TargetState:
    """What one database of the predecessor has run: read once, judged here."""

    name: str
    applied: frozenset[str]  # ancestors of its current heads, inclusive
    ledger: Mapping[str, LedgerEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    revision: str
    verdict: str  # allowed | blocked
    reason: str | None = None

    @property
    def blocked(self) -> bool:
        return self.verdict == "blocked"


def gate(
    revisions: Sequence[str],
    checksums: Mapping[str, str],
    predecessor: str | None,
    predecessor_targets: Sequence[TargetState],
) -> list[Step]:
    """Judge each revision a run would apply against what the predecessor has run.

    A revision passes only if every database of the predecessor has it applied now and
    recorded in its ledger with the checksum of the file that would run.
    """
    if predecessor is None:
        return [Step(rev, "allowed") for rev in revisions]
    steps = []
    for rev in revisions:
        reasons = [_why_not(rev, checksums[rev], t) for t in predecessor_targets]
        failing = [(t.name, r) for t, r in zip(predecessor_targets, reasons, strict=True) if r]
        if not predecessor_targets:
            steps.append(Step(rev, "blocked", f"{predecessor} has no database configured"))
        elif not failing:
            steps.append(Step(rev, "allowed"))
        else:
            steps.append(Step(rev, "blocked", _summarise(predecessor, failing)))
    return steps


def _why_not(rev: str, checksum: str, target: TargetState) -> str | None:
    entry = target.ledger.get(rev)
    if rev not in target.applied:
        return "rolled back on {where}" if entry is not None else "not run on {where}"
    if entry is None or not entry.applied:
        return (
            "not recorded in {where}'s ledger (migrated outside the orchestrator: "
            "adopt it with `orchestrator baseline`)"
        )
    if entry.checksum != checksum:
        return (
            f"edited since {{where}} ran it (checksum {entry.checksum[:12]} there, "
            f"{checksum[:12]} now)"
        )
    return None


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
