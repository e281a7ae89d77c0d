"""What fencing costs: one revision's ledger row and commit, with and without the fence.

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


def fence_bench(cluster: Any, log: Callable[[str], None]) -> str:
    from sqlalchemy import text

    from orchestrator import ledger
    from orchestrator.database import make_engine
    from orchestrator.locks import migration_lock

    log(f"  fencing: {BATCHES} x {BATCH} ledger rows + commits, plain and fenced, alternating")
    cluster.recreate("fence_bench")
    engine = make_engine(cluster.url("fence_bench"), "orchestrator bench")
    per_row: dict[str, list[float]] = {"plain": [], "fenced": []}
    try:
        with engine.begin() as connection:
            ledger.ensure_tables(connection)
        with (
            migration_lock(engine, "bench", 5, lambda _h: None, "bench") as held,
            engine.connect() as connection,
        ):
            connection.execute(text("SET synchronous_commit = off"))
            connection.commit()
            for i in range(BATCHES * 2):
                kind = "fenced" if i % 2 else "plain"
                fence = held.fence if kind == "fenced" else None
                start = time.perf_counter()
                for j in range(BATCH):
                    with connection.begin():
                        written = ledger.record_revision(
                            connection,
                            revision=f"r{i}_{j}",
                            checksum="0" * 64,
                            direction="up",
                            run_id="bench",
                            env="bench",
                            actor="bench",
                            at="2026-01-01T00:00:00Z",
                            fence=fence,
                        )
                    assert written
                per_row[kind].append((time.perf_counter() - start) / BATCH * 1e6)
    finally:
        engine.dispose()
    plain = statistics.median(per_row["plain"])
    fenced = statistics.median(per_row["fenced"])
    log(f"    per revision: plain {plain:.0f} µs, fenced {fenced:.0f} µs")
    return "\n".join(
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
            "",
        ]
    )
