"""`plan ENV`, `plan show FILE`, `plan approve FILE`: what would run, and release plans."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.cli.args import AddCommand, env_names, rev_arg, revision_arg
from orchestrator.cli.shared import Out, load_app, short


def register(add: AddCommand, common: argparse.ArgumentParser) -> None:
    p = add("plan", "what migrate would do, the gate's verdict, lint findings; changes nothing")
    first = p.add_argument("env", metavar="ENV", help="the environment (or `show`/`approve` FILE)")
    first.completer = _plan_first  # type: ignore[attr-defined]
    p.add_argument("file", nargs="?", metavar="FILE", help="the plan file of show/approve")
    p.add_argument("--out", metavar="FILE", help="write a release plan to review and apply")
    p.add_argument("--ttl", default="24h", metavar="24h", help="how long the plan may be applied")
    p.add_argument(
        "--format",
        choices=["text", "markdown", "json"],
        default="text",
        help="plan show: text, markdown (a pull-request comment) or json",
    )
    p.add_argument("--key-env", metavar="VAR", help="plan approve: variable of your private key")
    rev_arg(p, "--to", type=revision_arg, help="target revision (default: head)")
    p.add_argument("--sql", action="store_true", help="show the SQL (Alembic offline mode)")


def _plan_first(prefix: str = "", **_kw: Any) -> list[str]:
    """Completion after `plan `: an environment, or show/approve (never a file name)."""
    return [n for n in [*env_names(), "show", "approve"] if n.startswith(prefix)]


def cmd_plan(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.status import plan

    if args.env in ("show", "approve") or args.out:
        return cmd_plan_file(args, out)

    plans = plan(load_app(), args.env, args.to, args.sql)
    refuse = any(p["would_refuse"] for p in plans)
    if out.as_json:
        out.json(plans[0] if len(plans) == 1 else plans)
        return 3 if refuse else 0
    if len(plans) == 1:
        _plan_one(out, plans[0])
    else:
        _plan_fleet(out, plans)
    return 3 if refuse else 0


def _plan_one(out: Out, p: dict[str, Any]) -> None:
    where = p["env"] if p["target"] == p["env"] else f"{p['env']}/{p['target']}"
    print(f"{where}: {short(p['from'])} -> {p['to'][:12]}, {len(p['steps'])} revision(s)")
    if p["steps"]:
        out.table(
            ["REVISION", "VERDICT", "WHAT / WHY"],
            [
                [
                    s["revision"],
                    out.paint(s["verdict"], "32" if s["verdict"] == "allowed" else "31"),
                    s["reason"] or s["doc"],
                ]
                for s in p["steps"]
            ],
        )
    _plan_notes(out, p["lint"], p["lint_problem"])
    for text in [*p.get("lint_ahead", []), *([p["lint_advice"]] if p.get("lint_advice") else [])]:
        print(out.paint(f"  {text}", "33"))
    if p.get("schema_drift"):
        print(
            out.paint(
                f"  schema drift since {where}'s last run: {'; '.join(p['schema_drift'])}", "31"
            )
        )
    if p.get("env_py"):
        print(out.paint(f"  {p['env_py']}", "33"))
    if p.get("evidence_chain") and p["blocker"] != "evidence":  # nothing to run: said, no refusal
        print(out.paint(f"  evidence: {p['evidence_chain']}", "31"))
    if p.get("predecessor_evidence") == "unsigned" and p["steps"]:
        print(
            f"  evidence: {p['predecessor']}'s ledger is unsigned (no `signing:`): whoever "
            "can write its database can forge what the gate trusts"
        )
    for rev, sql in (p.get("sql") or {}).items():
        print(f"-- {rev}\n{sql.strip()}\n")
    print(_verdict_line(out, p["verdict"], p["would_refuse"]))


def _plan_notes(out: Out, lint: list[dict[str, Any]], problem: str | None) -> None:
    for f in lint:
        tag = "waived" if f["waived"] else "lint"
        print(f"  {tag}: {f['revision']} {f['rule']}: {f['message']} {f['help']}".rstrip())
    if problem:
        print(f"  lint could not run: {problem}")


def _verdict_line(out: Out, text: str, refused: bool) -> str:
    return out.paint(f"=> {text}", "31" if refused else "32")


def _plan_fleet(out: Out, plans: list[dict[str, Any]]) -> None:
    """A fleet: one line per group of databases in the same position, not a table each."""
    env, total = plans[0]["env"], len(plans)
    print(out.paint(f"{env}: fleet of {total} databases, to {plans[0]['to'][:12]}", "1"))
    groups: dict[tuple[str, int, str | None], list[dict[str, Any]]] = {}
    for p in plans:
        groups.setdefault((short(p["from"]), len(p["steps"]), p["blocker"]), []).append(p)
    for (start, count, blocker), members in groups.items():
        what = blocker or ("nothing to do" if not count else "would run")
        names = [m["target"] for m in members]
        listed = f": {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}" if blocker else ""
        print(f"  {len(members):>4} at {start}, {count} revision(s), {what}{listed}")
    lint = list({(f["revision"], f["rule"]): f for p in plans for f in p["lint"]}.values())
    _plan_notes(out, lint, next((p["lint_problem"] for p in plans if p["lint_problem"]), None))
    refused = [p for p in plans if p["would_refuse"]]
    if refused:
        text = f"REFUSED on {len(refused)} of {total} databases; first: {refused[0]['verdict']}"
    else:
        busy = [p for p in plans if p["steps"]]
        text = (
            f"{busy[0]['verdict']} on {len(busy)} of {total} databases"
            if busy
            else f"nothing to do: all {total} databases are at the target"
        )
    print("  (plan --json lists every database's steps)")
    print(_verdict_line(out, text, bool(refused)))


def cmd_plan_file(args: argparse.Namespace, out: Out) -> int:
    """`plan ENV --out FILE`, `plan show FILE`, `plan approve FILE --key-env VAR`."""
    from pathlib import Path

    from orchestrator.commands import plans
    from orchestrator.core.errors import UsageError

    if args.env in ("show", "approve") and not args.file:
        raise UsageError(f"plan {args.env} needs the plan FILE: orchestrator plan {args.env} FILE")
    if args.env == "show":
        path = Path(args.file)
        plan = plans.read_plan(path)
        sys.stdout.write(plans.show(plan, args.format, path, plans.approver_note(load_app(), plan)))
        return 0
    if args.env == "approve":
        if not args.key_env:
            raise UsageError("plan approve needs --key-env VAR, the variable of your private key.")
        done = plans.approve_plan(load_app(), Path(args.file), args.key_env)
        if out.as_json:
            out.json(done)
        else:
            verb = "approved" if done["added"] else "already approved by this key"
            print(
                f"{done['file']}: {verb} (key {done['keyid'][:16]}, "
                f"plan {done['plan_sha256'][:12]})"
            )
        return 0
    if args.file:
        raise UsageError(f"plan {args.env}: unexpected {args.file!r} (did you mean --out?)")
    made = plans.make_plan(load_app(), args.env, args.to, args.ttl, Path(args.out))
    if out.as_json:
        out.json(made)
    else:
        print(
            f"{made['file']}: plan for {made['env']} to {made['to'][:12]}, "
            f"{len(made['steps'])} revision(s), sha256 {made['plan_sha256'][:12]}, "
            f"expires {made['expires_at']}. Review: orchestrator plan show {made['file']}"
        )
    return 0
