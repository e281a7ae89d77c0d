"""`envs`, `status`, `current`, `history`: where every environment stands."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.cli.args import AddCommand, env_arg
from orchestrator.cli.shared import Out, load_app, short, wrap


def register(add: AddCommand, common: argparse.ArgumentParser) -> None:
    add("envs", "the environments in promotion order, validated")
    p = add("status", "per environment: current, head, pending, blocked, drift, last run")
    env_arg(p, "envs", nargs="*", help="environments to show (default: all)")
    p.add_argument("--targets", action="store_true", help="list every database of a fleet")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 when an environment's variable is unset too"
    )

    p = add("current", "the revision an environment's database is at")
    env_arg(p, "env", help="the environment to look at")
    add("history", "the revisions, newest first")


def cmd_envs(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.core.config import env_summary, load_environments, load_settings

    settings = load_settings()
    envs = load_environments(settings.environments_path)
    rows = [env_summary(envs.by_name[name], settings.project_dir) for name in envs.order]
    if out.as_json:
        out.json(rows)
        return 0
    out.table(
        ["ENV", "PROMOTES FROM", "URL VARIABLE", "TARGETS", "APPROVAL", "DOWNGRADE", "LINT"],
        [
            [
                r["name"],
                r["promotes_from"] or "-",
                r["url_env"] or "-",
                r["targets"],
                "required" if r["require_approval"] else "-",
                "allowed" if r["allow_downgrade"] else "refused",
                r["lint"],
            ]
            for r in rows
        ],
    )
    return 0


def cmd_status(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.status import health, status

    rows = status(load_app(), args.envs)
    if out.as_json:
        out.json(rows)
        return health(rows, args.strict)
    fleets = list(dict.fromkeys(r["env"] for r in rows if r["target"] != r["env"]))
    if not args.targets:
        for env in fleets:
            _fleet_summary(out, env, [r for r in rows if r["env"] == env])
        rows = [r for r in rows if r["env"] not in fleets]
    table = []
    problems: list[tuple[str, str]] = []
    for r in rows:
        if r.get("error") and not r.get("current"):
            state = "unconfigured" if not r["configured"] else "unreachable"
            table.append(
                [
                    r["env"],
                    r["target"] if r["target"] != r["env"] else "",
                    state,
                    short(r["head"]),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "see below",
                ]
            )
            problems.append((r["env"] if r["target"] == r["env"] else r["target"], r["error"]))
            continue
        table.append(
            [
                r["env"],
                r["target"] if r["target"] != r["env"] else "",
                short(r["current"]),
                short(r["head"]),
                len(r["pending"]),
                "?"
                if r.get("gate")
                else (out.paint(str(len(r["blocked"])), "33") if r["blocked"] else "0"),
                out.paint(",".join(x[:12] for x in r["drift"]), "31") if r["drift"] else "-",
                _schema_cell(out, r.get("schema", "unknown")),
                out.paint(",".join(r["interrupted"]), "31") if r["interrupted"] else "-",
                _last_run(out, r),
            ]
        )
    for r in rows:
        chain = r.get("evidence_chain")
        if chain and not chain.startswith(("intact", "nothing recorded")):
            print(out.paint(f"{r['env']}/{r['target']}: {chain}", "31"))
        if r.get("version_disagrees"):
            where = r["env"] if r["target"] == r["env"] else f"{r['env']}/{r['target']}"
            said = r["version_disagrees"]
            print(
                out.paint(
                    f"{where}: version table disagrees with ledger (alembic_version: "
                    f"{short(said['alembic_version'])}; ledger: {short(said['ledger'])})",
                    "31",
                )
            )
    unsigned = list(dict.fromkeys(r["env"] for r in rows if r.get("evidence") == "unsigned"))
    if table or not fleets:  # only fleets, rolled up: no empty table under them
        out.table(
            [
                "ENV",
                "TARGET",
                "CURRENT",
                "HEAD",
                "PENDING",
                "BLOCKED",
                "EDITED",  # checksum drift: revision files changed since they ran here
                "SCHEMA",
                "INTERRUPTED",
                "LAST RUN",
            ],
            table,
        )
    for where, error in problems:  # whole, wrapped at word boundaries: never cut mid-name
        print(wrap(f"{where}: {error}", indent="  "))
    notes = (f"{r['env']}: {r['env_py_note']}" for r in rows if r.get("env_py_note"))
    for note in dict.fromkeys(notes):  # env.py not as the predecessor's last run had it
        print(wrap(note, indent="  "))
    if unsigned:
        print(f"evidence unsigned (no `signing:`): {', '.join(unsigned)}")
    return health(rows, args.strict)


def _last_run(out: Out, r: dict[str, Any]) -> str:
    """A run in progress first; else the last run, saying when it never touched the schema."""
    if r.get("in_progress"):
        now = r["in_progress"][-1]
        return out.paint(f"running since {now['timestamp'][:19]} {now['actor']}", "33")
    last = r["last_run"]
    if not last:
        return "-"
    outcome = last["outcome"]
    if last.get("untouched") == "lock timeout":
        outcome = "lock timeout (nothing changed)"
    elif last.get("untouched"):
        outcome += " (nothing changed)"
    return f"{outcome} {last['timestamp'][:19]} {last['actor']}"


def _schema_cell(out: Out, value: str) -> str:
    return out.paint(value, {"ok": "32", "drifted": "31", "diverged": "31"}.get(value, "0"))


def _fleet_summary(out: Out, env: str, rows: list[dict[str, Any]]) -> None:
    from collections import Counter

    at = Counter(
        short(r["current"]) if r.get("configured") and not r.get("error") else "unreachable"
        for r in rows
    )
    failed = [r["target"] for r in rows if (r.get("last_run") or {}).get("outcome") == "failed"]
    drifted = [r["target"] for r in rows if r.get("drift")]
    interrupted = [r["target"] for r in rows if r.get("interrupted")]
    print(out.paint(f"{env}: fleet of {len(rows)} databases", "1"))
    for revision, count in at.most_common():
        print(f"  {count:>4} at {revision}")
    schemas = Counter(r.get("schema", "unknown") for r in rows)
    print(
        "  schema: "
        + ", ".join(
            _schema_cell(out, f"{schemas[value]} {value}")
            for value in ("ok", "drifted", "diverged", "unknown")
            if schemas[value]
        )
    )
    for value in ("drifted", "diverged"):
        names = [r["target"] for r in rows if r.get("schema") == value]
        if names:
            print(out.paint(f"  schema {value}: {', '.join(names)}", "31"))
    for label, names in (
        ("last run failed", failed),
        ("drifted", drifted),
        ("interrupted", interrupted),
    ):
        if names:
            print(out.paint(f"  {label}: {', '.join(names)}", "31"))
    print("  (status --targets lists every database)")


def cmd_current(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.status import current

    rows = current(load_app(), args.env)
    if out.as_json:
        out.json(rows)
    else:
        for r in rows:
            print(f"{r['target']}: {short(r['current'])}")
    return 0


def cmd_history(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.status import history

    rows = history(load_app())
    if out.as_json:
        out.json(rows)
    else:
        for r in rows:
            mark = " (head)" if r["head"] else ""
            print(f"{short(r['down_revisions'])} -> {r['revision']}{mark}, {r['doc']}")
    return 0
