"""The outcome of one run on one database: plain data for the CLI and the fleet."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.core.errors import OrchestratorError


@dataclass
class RunResult:
    env: str
    target: str
    run_id: str
    outcome: str
    applied: list[str] = field(default_factory=list)
    message: str = ""
    exit_code: int = 0
    audit_head: str | None = None  # hash of the last audit row the run wrote: an anchor
    adopted: list[str] = field(default_factory=list)  # keys adopt: ledger rows signed, not run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_result(
    env: str, target: str, run_id: str, exc: OrchestratorError, applied: list[str] | None = None
) -> RunResult:
    """A database's outcome when its run raised: refused, failed or timed out."""
    return RunResult(
        env, target, run_id, exc.outcome, list(applied or []), exc.message, exc.exit_code
    )


def attach_results(exc: OrchestratorError, before: list[RunResult]) -> None:
    """Put the results of the databases done before `exc` in front of its own, so that the
    command can still report every database (`--json` on a refusal or failure)."""
    exc.details["results"] = [*before, *exc.details.get("results", [])]


def results_of(exc: OrchestratorError) -> list[RunResult]:
    return list(exc.details.get("results", []))
