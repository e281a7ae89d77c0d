"""`drift`, `check`, `init`: the schema and the project itself."""

from __future__ import annotations

import argparse

from orchestrator.cli.args import AddCommand, env_arg
from orchestrator.cli.shared import Out, load_app


def register(add: AddCommand, common: argparse.ArgumentParser) -> None:
    p = add("drift", "what differs in ENV's live schema from what its last run recorded")
    env_arg(p, "env", help="the environment whose live schema to compare")
    p.add_argument(
        "--against",
        metavar="models|ENV",
        help="compare with the models (Alembic autogenerate) or with ENV's live schema "
        "(both at the same revision) instead",
    )

    p = add("check", "for CI: one head, real downgrades, models match migrations, lint")
    p.add_argument(
        "--scratch-url",
        metavar="URL",
        help="an empty database to run every revision up and down on (default: a scratch "
        "SQLite file); refused when it is not empty",
    )

    p = add("init", "adopt an existing Alembic project: environment files, env.py hand-over")
    p.add_argument(
        "--envs",
        default="dev,staging,prod",
        metavar="A,B,C",
        help="environment names in promotion order (default dev,staging,prod)",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")


def cmd_drift(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.drift import drift

    reports = drift(load_app(), args.env, args.against)
    differs = any(r["differences"] for r in reports)
    if out.as_json:
        out.json(reports[0] if len(reports) == 1 else reports)
        return 3 if differs else 0
    for r in reports:
        where = r["env"] if r["target"] == r["env"] else f"{r['env']}/{r['target']}"
        count = len(r["differences"])
        if not count:
            print(out.paint(f"{where}: no difference from {r['reference']}", "32"))
            continue
        print(out.paint(f"{where}: {count} difference(s) from {r['reference']}:", "31"))
        for d in r["differences"]:
            print(f"  {d['line']}")
            for line in (d["op"] or "").splitlines():
                print(out.paint(f"      {line}", "2"))
    return 3 if differs else 0


def cmd_check(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.check import run_checks

    findings = run_checks(load_app(), args.scratch_url)
    if out.as_json:
        out.json(findings)
    else:
        for f in findings:
            print(f"{out.paint(f['check'], '31')}: {f['message']}")
        if not findings:
            print(out.paint("check: all invariants hold", "32"))
    return 3 if findings else 0


def cmd_init(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.init import init
    from orchestrator.core.config import Settings

    settings = Settings(search_parents=False)  # init adopts this directory, never a parent
    adoption = init(
        settings.project_dir,
        settings.environments_path,
        settings.alembic_ini_path,
        [e.strip() for e in args.envs.split(",") if e.strip()],
        args.dry_run,
    )
    if out.as_json:
        out.json(
            {
                "dry_run": args.dry_run,
                "adopted": adoption.adopted,
                "actions": [a.as_dict() for a in adoption.actions],
                "notes": adoption.notes,
            }
        )
        return 0
    verb = "would " if args.dry_run else ""
    for action in adoption.actions:
        print(f"{verb}{action.action:<20} {action.path}")
        if action.detail:
            print("    " + action.detail.rstrip("\n").replace("\n", "\n    "))
    for note in adoption.notes:
        print(f"note: {note}")
    if not args.dry_run and adoption.adopted:
        print(
            "next: set each environment's URL variable, then adopt every database plain "
            "Alembic already migrated: orchestrator baseline ENV --revision REV --reason TEXT"
        )
    return 0
