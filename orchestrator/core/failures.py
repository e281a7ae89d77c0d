"""Pure: what a run that failed while applying revisions tells its user."""

from __future__ import annotations

from collections.abc import Sequence


def failure_message(
    *,
    where: str,
    failed: str | None,
    error: str,
    lost: bool,
    per_run: bool,
    autocommitted: bool,
    applied: Sequence[str],
    now: str,
) -> str:
    """`failed` did not commit (`error`); `lost`: the lock session had ended; `applied`: the
    revisions of the run that committed before it; `now`: where the database is."""
    earlier = (
        f"{len(applied)} earlier revision(s) of this run stay applied "
        f"({', '.join(applied) or 'none'}); {where} is at {now}."
    )
    if lost:
        message = (
            f"This run lost the migration lock on {where} while running {failed}: "
            "its lock session ended (terminated, idle timeout, or network), so another run "
            f"may hold the lock now. {failed} did not commit: it was rolled back"
            + (
                ", except the statements of its autocommit block, which stay"
                if autocommitted
                else ""
            )
            + f". Nothing more runs. {earlier} Run again once no other run is migrating it."
        )
    elif per_run:
        message = (
            f"Revision {failed} failed on {where}: {error}. The run's single "
            "transaction (transaction: per-run) was rolled back: none of its revisions "
            f"stay applied, none is recorded; {where} is at {now}."
        )
    elif autocommitted:
        message = (
            f"Revision {failed} failed on {where}, in or after its autocommit block: "
            f"{error}. Its statements in a transaction were rolled back, but those of its "
            "autocommit block (CREATE INDEX CONCURRENTLY and the like) run outside any "
            "transaction and were NOT rolled back: what they created before the failure, "
            "or what an earlier run killed after that block created, is still there. "
            f"{earlier} To resume, make those statements re-runnable (CREATE INDEX "
            "CONCURRENTLY IF NOT EXISTS) or drop what they left (DROP INDEX CONCURRENTLY "
            "IF EXISTS ...), then run again."
        )
    else:
        message = f"Revision {failed} failed on {where}: {error}. It was rolled back; {earlier}"
    return message
