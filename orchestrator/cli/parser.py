"""The whole parser: each command family's module adds its own subcommands."""

from __future__ import annotations

import argparse

from orchestrator.cli import audit, plan, project, runs, status
from orchestrator.cli.args import EXIT_HELP, Parser, Version, common_options

# Each command's --help ends with examples (a command without an entry gets none).
EXAMPLES: dict[str, str] = {
    "envs": "orchestrator envs",
    "status": "orchestrator status\n  orchestrator status prod --json",
    "plan": "orchestrator plan prod\n  orchestrator plan prod --to a41d7e9c0b12 --sql\n"
    "  orchestrator plan prod --out plan.json --ttl 24h     # a release plan to review\n"
    "  orchestrator plan show plan.json --format markdown\n"
    "  orchestrator plan approve plan.json --key-env RELEASE_MANAGER_KEY",
    "migrate": "orchestrator migrate dev\n"
    "  orchestrator migrate prod --approve --ticket CHG-1042\n"
    "  orchestrator migrate prod --approve --parallel 4 --canary 1   # a fleet",
    "promote": "orchestrator promote prod --approve --ticket CHG-1042\n"
    "  orchestrator migrate prod --plan plan.json --approve   # exactly a reviewed plan",
    "rollout": "orchestrator rollout --through staging\n"
    "  orchestrator rollout --through prod --approve --ticket CHG-1042",
    "downgrade": 'orchestrator downgrade dev --to -1 --reason "rework the orders index"\n'
    '  orchestrator downgrade prod --to a41d7e9c0b12 --reason "INC-77" --force --approve',
    "baseline": "orchestrator baseline prod --revision e19b6a3f4c70 "
    '--reason "migrated by hand before we adopted the orchestrator"',
    "audit": "orchestrator audit --env prod --since 7d\n"
    "  orchestrator audit --env prod --outcome refused --format csv > refusals.csv\n"
    "  orchestrator audit verify\n"
    "  orchestrator audit report --since 30d --out audit.html",
    "drift": "orchestrator drift prod\n  orchestrator drift prod --against staging",
    "check": "orchestrator check\n"
    "  orchestrator check --scratch-url postgresql+psycopg://ci@localhost/scratch",
    "current": "orchestrator current staging",
    "history": "orchestrator history",
    "init": "orchestrator init --dry-run\n  orchestrator init --envs dev,qa,prod",
    "accept": "orchestrator accept staging --revision a41d7e9c0b12 "
    '--reason "comment-only edit, reviewed in PR 311" --approve',
    "keys": "orchestrator keys generate prod --private-key-out ~/.keys/prod.pem\n"
    '  orchestrator keys adopt prod --reason "start signing" --approve',
}


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = Parser(
        prog="orchestrator",
        description="Promote Alembic migrations through environments: gated, locked, audited.",
        epilog=EXIT_HELP + "\nexample:\n  orchestrator status\n  orchestrator migrate dev",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action=Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    for family in (status, plan, runs, audit, project):
        family.register(add, common)
    for name, command in sub.choices.items():
        if name in EXAMPLES and not command.epilog:
            command.epilog = "example:\n  " + EXAMPLES[name]
    return parser
