"""One exception hierarchy, each class carrying the exit code of SPEC.md."""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """An error a user can cause or meet: printed as one paragraph, never a traceback."""

    exit_code = 1
    outcome = "failed"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class MigrationFailed(OrchestratorError):
    """A migration or database operation failed (exit 1)."""

    exit_code = 1


class UsageError(OrchestratorError):
    """Bad usage or configuration: bad YAML, unknown env, missing variable, heads (exit 2)."""

    exit_code = 2
    outcome = "error"


class Refused(OrchestratorError):
    """Refused by policy: gate, approval, downgrade policy, lint, drift (exit 3)."""

    exit_code = 3
    outcome = "refused"


class LockTimeout(OrchestratorError):
    """The migration lock was not acquired in time (exit 4)."""

    exit_code = 4


class LockLost(MigrationFailed):
    """The migration lock's session ended under a running run: it must not commit (exit 1)."""

    exit_code = 1


class AuditUnavailable(MigrationFailed):
    """The audit trail cannot be written: no schema change without it (exit 1)."""

    exit_code = 1


class Cancelled(OrchestratorError):
    """SIGTERM or SIGINT: the run stopped between revisions (exit 143 or 130)."""

    outcome = "interrupted"

    def __init__(self, message: str, exit_code: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.exit_code = exit_code
