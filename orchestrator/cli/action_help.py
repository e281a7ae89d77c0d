"""The help of the actions that are words after a command (`plan show`, `plan approve`,
`audit report`, `audit verify`): argparse would print the command's own help for them."""

from __future__ import annotations

from collections.abc import Sequence

ACTION_HELP = {
    ("plan", "show"): "usage: orchestrator plan show FILE [--format text|markdown|json]\n\n"
    "Render a release plan for a reviewer: steps, checksums, the predecessor's evidence, lint,\n"
    "approvals and whose approval counts.\n\n"
    "options:\n  --format {text,markdown,json}  markdown fits a pull-request comment or a job "
    "summary\n\nexample:\n  orchestrator plan show plan.json --format markdown",
    ("plan", "approve"): "usage: orchestrator plan approve FILE --key-env VAR\n\n"
    "Add your approval signature to a release plan, with the private key in VAR. A key that\n"
    "the plan's environment does not list in policy.plan_approvers is refused (exit 3).\n\n"
    "options:\n  --key-env VAR  the variable holding your private key (PEM text or a path)\n\n"
    "example:\n  orchestrator plan approve plan.json --key-env RELEASE_MANAGER_KEY",
    ("audit", "report"): "usage: orchestrator audit report --out FILE.html [--env E] "
    "[--since ...] [--until ...]\n                                [--actor A] [--event E] "
    "[--revision R] [--outcome O]\n\n"
    "Write one self-contained HTML file for a reviewer: per environment its current revision\n"
    "and lag, signed or unsigned evidence, runs (who ran, who approved, git state), refusals,\n"
    "and the revision x environment matrix. The filters are those of `audit`.\n\n"
    "example:\n  orchestrator audit report --since 30d --out audit.html",
    ("audit", "verify"): "usage: orchestrator audit verify [--env E] [--anchor HASH] [--json]\n\n"
    "Check that the audit trail is intact (hash chain; signatures and checkpoints where the\n"
    "environment signs); exit 1 naming the first broken row.\n\n"
    "example:\n  orchestrator audit verify --env prod --anchor <audit_head of a run>",
}


def action_help(argv: Sequence[str]) -> str | None:
    """The help of `plan show`, `plan approve`, `audit report`, `audit verify` when asked."""
    if not ({"-h", "--help"} & set(argv)):
        return None
    words = [a for a in argv if not a.startswith("-")]
    return ACTION_HELP.get((words[0], words[1])) if len(words) >= 2 else None
