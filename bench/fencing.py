"""What fencing and the audit trail cost per revision: one revision's ledger row and
commit, without the fence, with it, and with it plus the revision's audit event (hash-chained,
in the same transaction, as a run writes it).

The fence is part of the ledger INSERT (`INSERT ... SELECT ... WHERE <the lock session still
holds the lock>`), so it adds no round trip; what it adds is the server's work for that
predicate (pg_locks, pg_stat_get_activity). Measured on the migration session's settings
(synchronous_commit off), alternating plain and fenced batches on one connection.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

BATCH = 200
BATCHES = 10


def fence_bench(cluster: Any, log: Callable[[str], None]) -> tuple[dict[str, float], str]:
    """µs per revision of each feature, and the markdown section."""
    from sqlalchemy import text

    from orchestrator.db.database import make_engine
    from orchestrator.db.locks import migration_lock
    from orchestrator.evidence import ledger

    log(f"  fencing: {BATCHES} x {BATCH} ledger rows + commits, plain and fenced, alternating")
    cluster.recreate("fence_bench")
    engine = make_engine(cluster.url("fence_bench"), "orchestrator bench")
    kinds = ("plain", "fenced", "fenced + audit event")
    per_row: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        with engine.begin() as connection:
            ledger.ensure_tables(connection)
        with (
            migration_lock(engine, "bench", 5, lambda _h: None, "bench") as held,
            engine.connect() as connection,
        ):
            connection.execute(text("SET synchronous_commit = off"))
            connection.commit()
            for i in range(BATCHES * len(kinds)):
                kind = kinds[i % len(kinds)]
                fence = held.fence if kind != "plain" else None
                start = time.perf_counter()
                for j in range(BATCH):
                    with connection.begin():
                        row = ledger.revision_row(
                            revision=f"r{i}_{j}",
                            checksum="0" * 64,
                            direction="up",
                            run_id="bench",
                            env="bench",
                            actor="bench",
                            at="2026-01-01T00:00:00Z",
                        )
                        written = ledger.record_revision(connection, row, fence=fence)
                        if kind == "fenced + audit event":
                            ledger.append_audit(connection, [_event(i, j)])
                    assert written
                per_row[kind].append((time.perf_counter() - start) / BATCH * 1e6)
    finally:
        engine.dispose()
    plain = statistics.median(per_row["plain"])
    fenced = statistics.median(per_row["fenced"])
    audited = statistics.median(per_row["fenced + audit event"])
    log(f"    per revision: plain {plain:.0f} µs, fenced {fenced:.0f}, + audit {audited:.0f}")
    costs = {"fencing": fenced - plain, "audit trail (events of each revision)": audited - fenced}
    return costs, "\n".join(
        [
            "## Fencing",
            "",
            "Each revision's ledger row is inserted only while the run's lock session still "
            "holds the lock, in the same statement: no extra round trip. Cost of one ledger "
            f"row and its commit (median of {BATCHES} batches of {BATCH}, alternating):",
            "",
            "| ledger row + commit | µs per revision |",
            "|---|---:|",
            f"| plain INSERT | {plain:.0f} |",
            f"| fenced INSERT ... WHERE lock held | {fenced:.0f} |",
            f"| fence cost | {fenced - plain:+.0f} ({(fenced - plain) * 1000 / 1e6:+.2f} s per "
            "1000 revisions) |",
            f"| fenced INSERT + the revision's audit event (hash chain) | {audited:.0f} |",
            f"| audit event cost | {audited - fenced:+.0f} ({(audited - fenced) / 1e3:+.2f} s "
            "per 1000 revisions) |",
            "",
        ]
    )


def _event(i: int, j: int) -> dict[str, Any]:
    """A migration.applied event as a run writes it."""
    return {
        "timestamp": "2026-01-01T00:00:00Z",
        "event": "migration.applied",
        "run_id": "bench",
        "env": "bench",
        "actor": "bench",
        "revision": f"r{i}_{j}",
        "checksum": "0" * 64,
        "duration_ms": 3,
        "git_sha": "0" * 40,
    }
