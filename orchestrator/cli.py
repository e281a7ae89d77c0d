# PYTHON_ARGCOMPLETE_OK  (shell completion: see the README)
"""Command line: parse, call a use case, render. `main(argv) -> exit code`.

Heavy imports (SQLAlchemy, Alembic, pydantic) happen inside the commands, so `--help`
answers at once.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

EXIT_HELP = """exit codes:
  0  done, or nothing to do
  1  a migration or database operation failed
  2  usage or configuration error
  3  refused by policy (gate, approval, downgrade policy, lint, checksum or schema
     drift); for `drift`: the schema differs
  4  the migration lock was not acquired in time
"""


def _common() -> _Parser:
    """Options accepted before or after the command's name."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the result as JSON on stdout (refusals and errors too)",
    )
    common.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=argparse.SUPPRESS,
        help="stderr events: one JSON object per line, or one short line per event for a "
        "person (default auto: console on a terminal, JSON otherwise)",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only the result: no events or progress on stderr (errors still show)",
    )
    return common


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


class _Version(argparse.Action):
    """--version: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        print(f"orchestrator {package_version()}")
        parser.exit()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alembic-orchestrator")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from orchestrator import __version__

        return __version__


def _env_names(prefix: str = "", **_kw: Any) -> list[str]:
    """Completion: the environment files' names (no validation, no database)."""
    from orchestrator.core.config import Settings

    try:
        directory = Settings().environments_path
        names = sorted({p.stem for p in [*directory.glob("*.yaml"), *directory.glob("*.yml")]})
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [n for n in names if n.startswith(prefix)]


def _revisions(prefix: str = "", **_kw: Any) -> list[str]:
    """Completion: revision ids, and head/base."""
    try:
        from orchestrator.running.app import App

        revs = [r.revision for r in App.load().graph]
    except Exception:
        revs = []
    return [r for r in ["head", "base", *sorted(revs)] if r.startswith(prefix)]


def _env_arg(p: argparse.ArgumentParser, *names: str, **kwargs: Any) -> None:
    kwargs.setdefault("metavar", "ENV")
    action = p.add_argument(*names, **kwargs)
    action.completer = _env_names  # type: ignore[attr-defined]


def _rev_arg(p: argparse.ArgumentParser, *names: str, **kwargs: Any) -> None:
    kwargs.setdefault("metavar", "REV")
    action = p.add_argument(*names, **kwargs)
    action.completer = _revisions  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog="orchestrator",
        description="Promote Alembic migrations through environments: gated, locked, audited.",
        epilog=EXIT_HELP + "\nexample:\n  orchestrator status\n  orchestrator migrate dev",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    add("envs", "the environments in promotion order, validated")
    p = add("status", "per environment: current, head, pending, blocked, drift, last run")
    _env_arg(p, "envs", nargs="*", help="environments to show (default: all)")
    p.add_argument("--targets", action="store_true", help="list every database of a fleet")

    p = add("plan", "what migrate would do, the gate's verdict, lint findings; changes nothing")
    p.add_argument("env", metavar="ENV", help="the environment (or `show`/`approve` FILE)")
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
    _rev_arg(p, "--to", type=_revision, help="target revision (default: head)")
    p.add_argument("--sql", action="store_true", help="show the SQL (Alembic offline mode)")

    for name, text in (
        ("migrate", "upgrade ENV (default to head): gated, locked, audited"),
        ("promote", "upgrade ENV to exactly the revision its predecessor runs now"),
    ):
        p = add(name, text)
        _env_arg(p, "env", help="the environment to upgrade")
        if name == "migrate":
            _rev_arg(
                p,
                "--to",
                type=_revision,
                help="target revision (default: head); never below the current",
            )
        p.add_argument(
            "--plan",
            metavar="FILE",
            help="run exactly this reviewed plan (orchestrator plan ENV --out FILE)",
        )
        _run_options(p)

    p = add("rollout", "migrate each environment on the path to ENV, in order")
    _env_arg(
        p,
        "--through",
        required=True,
        help="the last environment: every environment from the first one down to it is "
        "migrated in promotion order (approval for each is asked before anything runs)",
    )
    _rev_arg(
        p, "--to", type=_revision, help="target revision for every environment (default: head)"
    )
    _run_options(p)

    p = add("downgrade", "revert ENV to REV (or -1); refused where allow_downgrade is false")
    _env_arg(p, "env", help="the environment to downgrade")
    _rev_arg(
        p,
        "--to",
        required=True,
        type=_revision,
        metavar="REV|-N",
        help="the revision to go back to, or -N to revert N revisions (-1: the last one)",
    )
    p.add_argument(
        "--reason",
        required=True,
        metavar="TEXT",
        type=_text,
        help="why; recorded on the audit trail",
    )
    p.add_argument("--force", action="store_true", help="override allow_downgrade: false")
    _run_options(p, fleet=False)

    p = add("baseline", "adopt a database that plain Alembic already migrated")
    _env_arg(p, "env", help="the environment whose database to adopt")
    _rev_arg(
        p,
        "--revision",
        required=True,
        type=_revision,
        help="the revision the database is at (its alembic_version); it and its ancestors "
        "are recorded in the ledger as run, nothing is executed",
    )
    p.add_argument(
        "--reason",
        required=True,
        metavar="TEXT",
        type=_text,
        help="why; recorded on the audit trail",
    )

    p = add(
        "accept",
        "re-record the checksum of an edited, already-applied revision (audited, approved)",
    )
    _env_arg(p, "env", help="the environment whose ledger re-records the file")
    _rev_arg(p, "--revision", required=True, type=_revision, help="the edited, applied revision")
    p.add_argument(
        "--reason", required=True, metavar="TEXT", type=_text, help="why, for the audit trail"
    )
    _run_options(p, fleet=False)

    p = add("keys", "Ed25519 signing keys: generate a pair; adopt existing evidence")
    keys = p.add_subparsers(
        dest="keys_command", metavar="ACTION", required=True, help="generate or adopt"
    )
    k = keys.add_parser(
        "generate",
        help="write keys/NAME.pub and the private key",
        description="Write OUT_DIR/NAME.pub (commit it) and the private key: to "
        "--private-key-out (mode 0600), else to stdout, once. Never overwrites without --force.",
        parents=[common],
    )
    k.add_argument("name", metavar="NAME", help="the key's name: keys/NAME.pub")
    k.add_argument("--out-dir", default="keys", metavar="DIR", help="default: keys")
    k.add_argument("--private-key-out", metavar="PATH", help="file for the private key (0600)")
    k.add_argument("--force", action="store_true", help="overwrite existing key files")
    k = keys.add_parser(
        "adopt",
        help="sign the ledger rows an environment already holds (after checking the files)",
        description="Start signing an existing environment: re-record and sign each applied "
        "revision's ledger row whose checksum matches its file now; audited.",
        parents=[common],
    )
    _env_arg(k, "env", help="the environment that starts signing its evidence")
    k.add_argument(
        "--reason", required=True, metavar="TEXT", type=_text, help="why, for the audit trail"
    )
    _run_options(k, fleet=False)

    p = add(
        "audit",
        "review the audit trail (newest last); `audit verify` checks the chain; "
        "`audit report --out FILE.html` writes a report for reviewers",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["verify", "report"],
        help="verify: check the hash chain; report: write an HTML report (--out)",
    )
    _env_arg(p, "--env", help="only this environment (default: every environment)")
    p.add_argument("--since", metavar="30m|12h|7d|DATE", help="events at or after this time")
    p.add_argument("--until", metavar="30m|12h|7d|DATE", help="events before this time")
    p.add_argument("--actor", metavar="NAME", help="only runs by this actor")
    p.add_argument("--event", metavar="NAME", help="only this event, e.g. run.refused")
    _rev_arg(p, "--revision", help="only events about this revision")
    p.add_argument(
        "--outcome",
        choices=["succeeded", "failed", "refused", "interrupted"],
        help="only events with this outcome",
    )
    p.add_argument("--run", metavar="ID", help="only the events of this run id")
    p.add_argument("--limit", type=_count, metavar="N", help="keep the N most recent matches")
    p.add_argument(
        "--anchor",
        metavar="HASH",
        help="verify: fail unless a row has this hash (an audit_head kept from a run's result)",
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        help="table (default on a terminal), csv (a header row, one event per row), "
        "json (JSON lines, as --json)",
    )
    p.add_argument("--out", metavar="FILE.html", help="audit report: the file to write")

    p = add("drift", "what differs in ENV's live schema from what its last run recorded")
    _env_arg(p, "env", help="the environment whose live schema to compare")
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

    p = add("current", "the revision an environment's database is at")
    _env_arg(p, "env", help="the environment to look at")
    add("history", "the revisions, newest first")

    p = add("init", "adopt an existing Alembic project: environment files, env.py hand-over")
    p.add_argument(
        "--envs",
        default="dev,staging,prod",
        metavar="A,B,C",
        help="environment names in promotion order (default dev,staging,prod)",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    for name, command in sub.choices.items():
        if name in EXAMPLES and not command.epilog:
            command.epilog = "example:\n  " + EXAMPLES[name]
    return parser


def _revision(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "an empty revision names nothing: give REV, or leave it out"
        )
    return value


def _seconds(value: str) -> float:
    import math

    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a finite number of seconds, 0 or more")
    return seconds


def _text(value: str) -> str:
    limit = 4096  # orchestrator.core.config.MAX_TEXT, without importing pydantic for --help
    if len(value) > limit:
        raise argparse.ArgumentTypeError(f"{len(value)} characters long; at most {limit}")
    return value


def _count(value: str) -> int:
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0, 1, 2, ...)")
    return int(value)


def _run_options(p: argparse.ArgumentParser, fleet: bool = True) -> None:
    p.add_argument(
        "--approve",
        action="store_true",
        help="approve a run where policy.require_approval is set (on a terminal you may "
        "type the environment's name instead)",
    )
    p.add_argument(
        "--ticket", metavar="ID", type=_text, help="change ticket, recorded on every event"
    )
    p.add_argument(
        "--lock-timeout",
        type=_seconds,
        metavar="S",
        help="seconds to wait for the migration lock (default: the environment's lock.timeout)",
    )
    if fleet:
        group = p.add_argument_group("fleets (environments with many databases)")
        group.add_argument(
            "--parallel", type=int, default=1, metavar="N", help="worker processes (default 1)"
        )
        group.add_argument(
            "--canary",
            type=int,
            default=0,
            metavar="K",
            help="migrate the first K databases alone first",
        )
        group.add_argument(
            "--on-error",
            choices=["stop", "continue"],
            default="stop",
            help="after a database fails: stop (default; the rest are not run) or continue",
        )
        group.add_argument(
            "--shard",
            metavar="I/N|auto",
            help="only every N-th database from the I-th; `auto` reads it from the CI or "
            "scheduler (CI_NODE_INDEX, JOB_COMPLETION_INDEX, ORCHESTRATOR_SHARD)",
        )


# -- rendering -------------------------------------------------------------------------------


class Out:
    def __init__(self, as_json: bool, json_logs: bool = False) -> None:
        self.as_json = as_json
        self.json_logs = json_logs
        self.streamed: set[tuple[str, str]] = set()  # (env, target) results already printed
        self.color = "NO_COLOR" not in os.environ and sys.stdout.isatty()

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def json(self, data: Any) -> None:
        from orchestrator.core.secrets import redact_value

        print(json.dumps(redact_value(data), indent=2, default=str))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Columns aligned on what shows: colour codes take no room on a terminal."""
        from orchestrator.core.secrets import redact

        cells = [[("" if c is None else redact(str(c))) for c in row] for row in rows]
        widths = [max([len(h), *(visible_len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
        head = "  ".join(pad(h, w) for h, w in zip(headers, widths, strict=True))
        print(self.paint(head.rstrip(), "1"))
        for row in cells:
            print("  ".join(pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def pad(text: str, width: int) -> str:
    return text + " " * (width - visible_len(text))


def short(revs: Sequence[str] | None) -> str:
    return ",".join(r[:12] for r in revs) if revs else "base"


# -- commands ----------------------------------------------------------------------------------


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
    from orchestrator.commands.status import status

    rows = status(_app(), args.envs)
    if out.as_json:
        out.json(rows)
        return 0
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
        last = r["last_run"]
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
                f"{last['outcome']} {last['timestamp'][:19]} {last['actor']}" if last else "-",
            ]
        )
    for r in rows:
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
                "DRIFT",
                "SCHEMA",
                "INTERRUPTED",
                "LAST RUN",
            ],
            table,
        )
    for where, error in problems:  # whole, wrapped at word boundaries: never cut mid-name
        print(wrap(f"{where}: {error}", indent="  "))
    for note in dict.fromkeys(
        f"{r['env']}: {r['env_py_note']}" for r in rows if r.get("env_py_note")
    ):
        print(wrap(note, indent="  "))
    if unsigned:
        print(f"evidence unsigned (no `signing:`): {', '.join(unsigned)}")
    return 0


def _schema_cell(out: Out, value: str) -> str:
    return out.paint(value, {"ok": "32", "drifted": "31", "diverged": "31"}.get(value, "0"))


def wrap(text: str, indent: str = "") -> str:
    """Fill to the terminal's width (80 off a terminal), breaking only between words."""
    import shutil
    import textwrap

    width = max(40, shutil.get_terminal_size((80, 24)).columns - 1)
    return textwrap.fill(
        text, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


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


def cmd_plan(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.status import plan

    if args.env in ("show", "approve") or args.out:
        return cmd_plan_file(args, out)

    plans = plan(_app(), args.env, args.to, args.sql)
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
    if p.get("schema_drift"):
        print(
            out.paint(
                f"  schema drift since {where}'s last run: {'; '.join(p['schema_drift'])}", "31"
            )
        )
    if p.get("env_py"):
        print(out.paint(f"  {p['env_py']}", "33"))
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
        sys.stdout.write(plans.show(plans.read_plan(path), args.format, path))
        return 0
    if args.env == "approve":
        if not args.key_env:
            raise UsageError("plan approve needs --key-env VAR, the variable of your private key.")
        done = plans.approve_plan(_app(), Path(args.file), args.key_env)
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
    made = plans.make_plan(_app(), args.env, args.to, args.ttl, Path(args.out))
    if out.as_json:
        out.json(made)
    else:
        print(
            f"{made['file']}: plan for {made['env']} to {made['to'][:12]}, "
            f"{len(made['steps'])} revision(s), sha256 {made['plan_sha256'][:12]}, "
            f"expires {made['expires_at']}. Review: orchestrator plan show {made['file']}"
        )
    return 0


def _run_results(out: Out, results: list[Any], verb: str = "applied") -> int:
    """Print each database's outcome; the exit code is the first failure's. `verb` says what
    happened to the revisions: applied, reverted (downgrade), recorded (baseline)."""
    code = next((r.exit_code for r in results if r.exit_code), 0)
    if out.as_json:
        out.json([r.as_dict() for r in results])
    else:
        for r in results:
            if (r.env, r.target) not in out.streamed:
                print(_result_line(out, r, verb))
    failed = [r.target for r in results if r.exit_code]
    skipped = sum(r.outcome == "skipped" for r in results)
    if failed:
        left = f" {skipped} more not run; a re-run does only what is left." if skipped else ""
        _report(
            f"{len(failed)} database(s) did not finish: {', '.join(failed)}.{left}",
            code,
            out.json_logs,
        )
    return code


def _result_line(out: Out, r: Any, verb: str = "applied") -> str:
    where = r.env if r.target == r.env else f"{r.env}/{r.target}"
    if r.exit_code:
        return f"{where}: {out.paint(r.outcome, '31')} (exit {r.exit_code}): {r.message}"
    if r.applied:
        return (
            f"{where}: {out.paint(r.outcome, '32')}, {verb} {len(r.applied)}: "
            f"{', '.join(r.applied)} (run {r.run_id})" + (f"; {r.message}" if r.message else "")
        )
    return f"{where}: {r.message or r.outcome}"


def _options(args: argparse.Namespace) -> Any:
    from orchestrator.commands.migrate import Options

    plan = None
    if getattr(args, "plan", None):
        from pathlib import Path

        from orchestrator.commands.plans import read_plan

        plan = read_plan(Path(args.plan))
    return Options(
        approve=args.approve, ticket=args.ticket, lock_timeout=args.lock_timeout, plan=plan
    )


def _fleet(args: argparse.Namespace, out: Out) -> Any:
    from orchestrator.running.fleet import FleetOptions, parse_shard

    if args.parallel < 1 or args.canary < 0:
        from orchestrator.core.errors import UsageError

        raise UsageError("--parallel must be at least 1 and --canary at least 0.")

    def stream(result: Any, done: int, total: int) -> None:
        """A fleet's databases, each printed (and flushed) the moment it finishes."""
        width = len(str(total))
        print(f"[{done:>{width}}/{total}] {_result_line(out, result)}", flush=True)
        out.streamed.add((result.env, result.target))

    return FleetOptions(
        parallel=args.parallel,
        canary=args.canary,
        on_error=args.on_error,
        shard=parse_shard(args.shard),
        on_result=None if out.as_json else stream,
    )


def cmd_migrate(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.migrate import migrate

    return _run_results(out, migrate(_app(), args.env, args.to, _options(args), _fleet(args, out)))


def cmd_promote(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.migrate import promote

    return _run_results(out, promote(_app(), args.env, _options(args), _fleet(args, out)))


def cmd_rollout(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.migrate import rollout

    results = rollout(_app(), args.through, args.to, _options(args), _fleet(args, out))
    return _run_results(out, results)


def cmd_downgrade(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.downgrade import downgrade

    results = downgrade(_app(), args.env, args.to, args.reason, args.force, _options(args))
    return _run_results(out, results, "reverted")


def cmd_baseline(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.downgrade import baseline

    results = baseline(_app(), args.env, args.revision, args.reason)
    return _run_results(out, results, "recorded")


def cmd_accept(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.accept import accept

    return _run_results(out, accept(_app(), args.env, args.revision, args.reason, _options(args)))


def cmd_keys(args: argparse.Namespace, out: Out) -> int:
    from pathlib import Path

    from orchestrator.commands import keys

    if args.keys_command == "adopt":
        return _run_results(out, keys.adopt(_app(), args.env, args.reason, _options(args)))
    private_out = Path(args.private_key_out) if args.private_key_out else None
    made = keys.generate(args.name, Path(args.out_dir), private_out, args.force)
    if out.as_json:
        out.json(made)
        return 0
    if made["private_key"] is not None:
        sys.stdout.write(made["private_key"])
        print(
            f"wrote {made['public_key']} (key id {made['keyid'][:16]}); the private key is "
            "above, shown once: store it in the CI variable named by signing.key_env.",
            file=sys.stderr,
        )
    else:
        print(
            f"wrote {made['public_key']} (commit it) and {made['private_key_file']} (mode "
            f"0600; keep it out of the repo), key id {made['keyid'][:16]}"
        )
    return 0


def cmd_audit(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands import audit as audit_commands
    from orchestrator.core.errors import UsageError

    if args.out is not None and args.action != "report":
        raise UsageError("--out names the file of `audit report`; other audit commands print.")
    if args.action is not None and args.format is not None:
        raise UsageError(f"--format is for listing events; `audit {args.action}` has no formats.")
    if out.as_json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format} disagree: give one of them.")
    app = _app(collect=False)
    if args.action == "verify":
        return _audit_verify(app, args, out)
    if args.env:
        app.envs.get(args.env)
    flt = _audit_filter(args)
    if args.action == "report":
        return _audit_report(app, flt, args, out)
    events, unreachable = audit_commands.audit(app, flt)
    _warn_unreachable(unreachable)
    code = 1 if args.env and unreachable else 0  # the one env asked for could not be read
    fmt = args.format or ("json" if out.as_json else "table")
    if fmt == "json":
        for event in events:
            print(json.dumps(event, default=str))
        return code
    if fmt == "csv":
        sys.stdout.write(audit_commands.events_csv(events))
        return code
    from orchestrator.core.textsafe import escape_controls

    out.table(
        ["TIMESTAMP", "ENV", "EVENT", "OUTCOME", "REVISION", "ACTOR", "RUN", "DETAIL"],
        [
            [
                escape_controls(str(cell))
                for cell in (
                    e["timestamp"][:23].replace("T", " "),
                    e["env"] + (f"/{e['target']}" if e.get("target") else ""),
                    e["event"],
                    e.get("outcome") or "",
                    (e.get("revision") or "")[:12],
                    e["actor"],
                    e["run_id"],
                    _detail(e),
                )
            ]
            for e in events
        ],
    )
    return code


def _audit_filter(args: argparse.Namespace) -> Any:
    from orchestrator.commands.audit import parse_when
    from orchestrator.evidence.ledger import AuditFilter

    return AuditFilter(
        env=args.env,
        since=parse_when(args.since),
        until=parse_when(args.until),
        actor=args.actor,
        event=args.event,
        revision=args.revision,
        outcome=args.outcome,
        run_id=args.run,
        limit=args.limit,
    )


def _warn_unreachable(unreachable: Sequence[str]) -> None:
    if unreachable:  # a log event: off a terminal, every stderr line stays one JSON object
        import structlog

        for problem in unreachable:
            structlog.get_logger("orchestrator").warning("audit.not_read", problem=problem)


def _audit_verify(app: Any, args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands import audit as audit_commands

    if args.anchor is not None and not args.env:
        from orchestrator.core.errors import UsageError

        raise UsageError("--anchor HASH needs --env ENV: an anchor belongs to one trail.")
    results = audit_commands.verify(app, args.env, args.anchor)
    broken = [r for r in results if r.get("checked") and not r["intact"]]
    # a configured database we could not read is not proven intact
    unread = [r for r in results if not r["checked"] and r.get("configured", True)]
    if out.as_json:
        out.json(results)
    else:
        for r in results:
            where = r["env"] if r["target"] == r["env"] else f"{r['env']}/{r['target']}"
            if not r["checked"]:
                print(f"{where}: not checked ({r['error']})")
            elif r["intact"]:
                print(f"{where}: {out.paint('intact', '32')} ({r['rows']} rows, {r['proof']})")
            else:
                b = r["broken"]
                at = f"{b['kind']} {b['id']} ({b['timestamp']})" if b["id"] else b["kind"]
                print(out.paint(f"{where}: BROKEN at {at}: {b['problem']}", "31"))
    return 1 if broken or unread else 0


def _audit_report(app: Any, flt: Any, args: argparse.Namespace, out: Out) -> int:
    from pathlib import Path

    from orchestrator.commands.report import write_report
    from orchestrator.core.errors import UsageError

    if not args.out:
        raise UsageError("audit report needs --out FILE.html: the file to write the report to.")
    filters = []
    for flag, given, resolved in (
        ("--env", args.env, None),
        ("--since", args.since, flt.since),
        ("--until", args.until, flt.until),
        ("--actor", args.actor, None),
        ("--event", args.event, None),
        ("--revision", args.revision, None),
        ("--outcome", args.outcome, None),
        ("--run", args.run, None),
        ("--limit", None if args.limit is None else str(args.limit), None),
    ):
        if given is not None:
            shown = given if resolved in (None, given) else f"{given} (from {resolved})"
            filters.append((flag, shown))
    written = write_report(app, flt, filters, Path(args.out))
    _warn_unreachable(written.unreachable)
    report = written.report
    summary = {
        "report": str(written.path),
        "bytes": written.size,
        "events": report.events,
        "runs": report.runs_total,
        "runs_shown": report.runs_shown,
        "broken": [f"{b['env']}/{b['target']}" for b in written.broken],
    }
    if out.as_json:
        out.json(summary)
    else:
        capped = (
            f", the {report.runs_shown} most recent shown"
            if report.runs_shown < report.runs_total
            else ""
        )
        print(
            f"Report written to {written.path}: {report.events} events, "
            f"{report.runs_total} runs{capped}."
        )
        for b in written.broken:
            where = b["env"] if b["target"] == b["env"] else f"{b['env']}/{b['target']}"
            at = f"{b['broken'].get('kind', 'row')} {b['broken']['id'] or ''}".strip()
            print(out.paint(f"{where}: audit chain BROKEN at {at}", "31"))
    # as `audit verify`: a broken chain, or the one environment asked for unread, is a failure
    return 1 if written.broken or (args.env and written.unreachable) else 0


def _detail(event: dict[str, Any]) -> str:
    for key in ("error", "reason", "ticket"):
        if event.get(key):
            return str(event[key])[:80]
    if event.get("to_revision"):
        return f"-> {str(event['to_revision'])[:12]}"
    return ""


def cmd_drift(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.drift import drift

    reports = drift(_app(), args.env, args.against)
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

    findings = run_checks(_app(), args.scratch_url)
    if out.as_json:
        out.json(findings)
    else:
        for f in findings:
            print(f"{out.paint(f['check'], '31')}: {f['message']}")
        if not findings:
            print(out.paint("check: all invariants hold", "32"))
    return 3 if findings else 0


def cmd_current(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.status import current

    rows = current(_app(), args.env)
    if out.as_json:
        out.json(rows)
    else:
        for r in rows:
            print(f"{r['target']}: {short(r['current'])}")
    return 0


def cmd_init(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.init import init
    from orchestrator.core.config import Settings

    settings = Settings(search_parents=False)  # init adopts this directory, never a parent
    actions = init(
        settings.project_dir,
        settings.environments_path,
        settings.alembic_ini_path,
        [e.strip() for e in args.envs.split(",") if e.strip()],
        args.dry_run,
    )
    if out.as_json:
        out.json({"dry_run": args.dry_run, "actions": [a.as_dict() for a in actions]})
        return 0
    verb = "would " if args.dry_run else ""
    for action in actions:
        print(f"{verb}{action.action:<20} {action.path}")
        if action.detail:
            print("    " + action.detail.rstrip("\n").replace("\n", "\n    "))
    if not args.dry_run:
        print(
            "next: set each environment's URL variable, then adopt every database plain "
            "Alembic already migrated: orchestrator baseline ENV --revision REV --reason TEXT"
        )
    return 0


def cmd_history(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.status import history

    rows = history(_app())
    if out.as_json:
        out.json(rows)
    else:
        for r in rows:
            mark = " (head)" if r["head"] else ""
            print(f"{short(r['down_revisions'])} -> {r['revision']}{mark}, {r['doc']}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Out], int]] = {
    "envs": cmd_envs,
    "status": cmd_status,
    "plan": cmd_plan,
    "migrate": cmd_migrate,
    "promote": cmd_promote,
    "rollout": cmd_rollout,
    "downgrade": cmd_downgrade,
    "baseline": cmd_baseline,
    "accept": cmd_accept,
    "keys": cmd_keys,
    "audit": cmd_audit,
    "drift": cmd_drift,
    "check": cmd_check,
    "current": cmd_current,
    "history": cmd_history,
    "init": cmd_init,
}


QUIET_COMMANDS = {"envs", "history", "init"}
LOG_FORMATS = ("auto", "json", "console")


def _app(collect: bool = True) -> Any:
    """The project, loaded. With `collect` False the collector stays off (if console_main
    turned it off): for commands that read a whole audit trail, whose hundreds of thousands
    of long-lived rows make no cycles, yet set off full collections that cost a third of
    their time."""
    from orchestrator.running.app import App

    if not gc.isenabled():  # console_main's imports are done: collect what the run makes
        gc.freeze()
        if collect:
            gc.enable()
    return App.load(interactive=True)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake comes back to `main` (which owes `--json` a result)
    instead of exiting on the spot."""

    def error(self, message: str) -> NoReturn:
        raise _UsageMistake(self, message)


class _UsageMistake(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser, self.message = parser, message


def console_main() -> NoReturn:
    """The `orchestrator` command, with the garbage collector kept off what its imports made.

    Imports make many long-lived objects and little garbage, yet set off collections that
    cost a fifth of their time: the collector stays off until they are done (`_app`). At
    the end everything alive is frozen, so the interpreter's shutdown skips its full
    collections over it (0.2-0.5 s on a small machine). Output is still flushed, atexit
    handlers and finalizers still run.
    """
    gc.disable()
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete)
        import argcomplete

        argcomplete.autocomplete(parser)
    try:
        args = parser.parse_args(argv)
    except _UsageMistake as mistake:
        mistake.parser.print_usage(sys.stderr)
        print(f"{mistake.parser.prog}: error: {mistake.message}", file=sys.stderr)
        if "--json" in argv:
            _print_json_error(mistake.message, 2, "error")
        return 2
    as_json = getattr(args, "json", False)
    log_format = getattr(args, "log_format", None) or os.environ.get(
        "ORCHESTRATOR_LOG_FORMAT", "auto"
    )
    from orchestrator.core.errors import OrchestratorError
    from orchestrator.core.logging import configure_logging, wants_json

    if log_format not in LOG_FORMATS:
        text = f"ORCHESTRATOR_LOG_FORMAT={log_format!r} is not one of {', '.join(LOG_FORMATS)}."
        if as_json:
            _print_json_error(text, 2, "error")
        return _report(text, 2, False)

    if args.command not in QUIET_COMMANDS:  # structlog costs start-up time `envs` need not pay
        configure_logging(log_format, quiet=getattr(args, "quiet", False))
    from orchestrator.running import cancel

    cancel.install()  # SIGTERM/SIGINT stop a run between revisions (exit 143/130)
    json_logs = wants_json(log_format)
    try:
        return COMMANDS[args.command](args, Out(as_json, json_logs))
    except OrchestratorError as exc:
        if as_json:
            _print_json_error(exc.message, exc.exit_code, exc.outcome, exc.details.get("results"))
        return _report(exc.message, exc.exit_code, json_logs)
    except KeyboardInterrupt:
        if as_json:
            _print_json_error("interrupted by the user", 130, "interrupted")
        return _report("interrupted by the user", 130, json_logs)
    except Exception as exc:  # an error we did not foresee: still one paragraph
        if os.environ.get("ORCHESTRATOR_DEBUG"):
            raise
        from orchestrator.core.secrets import redact

        text = redact(f"unexpected error: {type(exc).__name__}: {exc}".splitlines()[0])
        text += " (set ORCHESTRATOR_DEBUG=1 for a traceback)"
        if as_json:
            _print_json_error(text, 1, "failed")
        return _report(text, 1, json_logs)


def _print_json_error(
    message: str, code: int, outcome: str, results: Sequence[Any] | None = None
) -> None:
    """`--json` never leaves stdout empty: a run command that reached databases prints their
    results (the last one refused or failed, each with outcome, message and exit_code);
    anything else prints one object with outcome, message and exit_code."""
    from orchestrator.core.secrets import redact, redact_value

    if results:
        data: Any = [redact_value(r.as_dict()) for r in results]
    else:
        data = {"outcome": outcome, "message": redact(message), "exit_code": code}
    print(json.dumps(data, indent=2, default=str), flush=True)


def _report(message: str, code: int, as_json: bool) -> int:
    from orchestrator.core.secrets import redact

    message = redact(message)
    if as_json:
        import structlog

        from orchestrator.core.logging import configure_logging

        configure_logging("json")
        structlog.get_logger("orchestrator").error("command.error", error=message, exit_code=code)
    else:
        color = "NO_COLOR" not in os.environ and sys.stderr.isatty()
        prefix = "\033[31merror:\033[0m" if color else "error:"
        print(f"{prefix} {message}", file=sys.stderr)
    return code
