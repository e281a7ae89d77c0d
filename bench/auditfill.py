"""Append many audit events to a target database, fast, with a valid hash chain.

The chain continues from the last row already there (real runs wrote some), hashes are
computed with the orchestrator's own `chain_rows`, and rows go in with
COPY, so `orchestrator audit verify` still finds the trail intact.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from orchestrator.evidence.ledger import AUDIT_TABLE, GENESIS, chain_rows

ACTORS = ["alice", "bob", "carol", "dave", "ci-bot"]
COLUMNS = (
    "id",
    "timestamp",
    "event",
    "run_id",
    "env",
    "actor",
    "revision",
    "outcome",
    "payload",
    "prev_hash",
    "hash",
)


def _run_events(rng: random.Random, revisions: list[str]) -> list[dict]:
    """The events of one synthetic run (without timestamp/run_id/env/actor)."""
    roll = rng.random()
    if roll < 0.08:  # refused by the gate
        rev = rng.choice(revisions)
        return [
            {"event": "run.started"},
            {
                "event": "gate.refused",
                "outcome": "refused",
                "blocked": [{"revision": rev, "reason": "not run on staging"}],
            },
            {
                "event": "run.refused",
                "outcome": "refused",
                "error": f"Refused: {rev} not run on dev",
            },
        ]
    events: list[dict] = [
        {"event": "run.started"},
        {"event": "lock.acquired", "lock_key": "orchestrator"},
        {"event": "gate.passed", "revisions": []},
    ]
    applied = rng.sample(revisions, k=min(len(revisions), rng.randint(1, 4)))
    for rev in applied:
        events.append(
            {
                "event": "migration.applied",
                "revision": rev,
                "checksum": "0" * 64,
                "duration_ms": rng.randint(5, 900),
            }
        )
    if roll < 0.15:
        events.append(
            {
                "event": "migration.failed",
                "outcome": "failed",
                "revision": applied[-1],
                "error": "relation already exists",
            }
        )
        events.append(
            {
                "event": "run.failed",
                "outcome": "failed",
                "revision": applied[-1],
                "error": "Revision failed",
            }
        )
    else:
        events.append({"event": "run.succeeded", "outcome": "succeeded", "applied": applied})
    events.append({"event": "lock.released", "lock_key": "orchestrator"})
    return events


def fill_audit(dsn: str, env: str, count: int, revisions: list[str], seed: int = 7) -> int:
    """Append `count` events (over the last 60 days, oldest first). Returns the last id."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(days=60)
    step = (now - timedelta(minutes=5) - start) / count
    records: list[dict] = []
    while len(records) < count:
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex[:12]
        actor = rng.choice(ACTORS)
        for fields in _run_events(rng, revisions)[: count - len(records)]:
            moment = start + step * len(records)
            records.append(
                {
                    "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "run_id": run_id,
                    "env": env,
                    "actor": actor,
                    "command": "migrate",
                    **fields,
                }
            )
    with psycopg.connect(dsn) as conn:
        last = conn.execute(
            f"SELECT id, hash FROM {AUDIT_TABLE} ORDER BY id DESC LIMIT 1"
        ).fetchone()
        rows = chain_rows(records, *(last if last else (0, GENESIS)))
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {AUDIT_TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(tuple(row[c] for c in COLUMNS))
        conn.execute(f"ANALYZE {AUDIT_TABLE}")
        conn.commit()
    return rows[-1]["id"] if rows else (last[0] if last else 0)
