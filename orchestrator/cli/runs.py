"""The commands that run something on a database: migrate, promote, rollout, downgrade,
baseline, accept, keys."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.cli.args import AddCommand, env_arg, rev_arg, revision_arg, run_options, text_arg
from orchestrator.cli.shared import Out, load_app, report_error


def register(add: AddCommand, common: argparse.ArgumentParser) -> None:
    for name, text in (
        ("migrate", "upgrade ENV (default to head): gated, locked, audited"),
        ("promote", "upgrade ENV to exactly the revision its predecessor runs now"),
    ):
        p = add(name, text)
        env_arg(p, "env", help="the environment to upgrade")
        p.add_argument(
            "--out",
            metavar="FILE",
            help="not here: a release plan is written by `orchestrator plan ENV --out FILE` "
            "and applied with --plan FILE",
        )
        if name == "migrate":
            rev_arg(
                p,
                "--to",
                type=revision_arg,
                help="target revision (default: head); never below the current",
            )
        p.add_argument(
            "--plan",
            metavar="FILE",
            help="run exactly this reviewed plan (orchestrator plan ENV --out FILE)",
        )
        run_options(p)

    p = add("rollout", "migrate each environment on the path to ENV, in order")
    env_arg(
        p,
        "--through",
        required=True,
        help="the last environment: every environment from the first one down to it is "
        "migrated in promotion order (approval for each is asked before anything runs)",
    )
    rev_arg(
        p, "--to", type=revision_arg, help="target revision for every environment (default: head)"
    )
    run_options(p)

    p = add("downgrade", "revert ENV to REV (or -1); refused where allow_downgrade is false")
    env_arg(p, "env", help="the environment to downgrade")
    rev_arg(
        p,
        "--to",
        required=True,
        type=revision_arg,
        metavar="REV|-N",
        help="the revision to go back to, or -N to revert N revisions (-1: the last one)",
    )
    p.add_argument(
        "--reason",
        required=True,
        metavar="TEXT",
        type=text_arg,
        help="why; recorded on the audit trail",
    )
    p.add_argument("--force", action="store_true", help="override allow_downgrade: false")
    run_options(p, fleet=False)

    p = add("baseline", "adopt a database that plain Alembic already migrated")
    env_arg(p, "env", help="the environment whose database to adopt")
    rev_arg(
        p,
        "--revision",
        required=True,
        type=revision_arg,
        help="the revision the database is at (its alembic_version); it and its ancestors "
        "are recorded in the ledger as run, nothing is executed",
    )
    p.add_argument(
        "--reason",
        required=True,
        metavar="TEXT",
        type=text_arg,
        help="why; recorded on the audit trail",
    )

    p = add(
        "accept",
        "re-record the checksum of an edited, already-applied revision (audited, approved)",
    )
    env_arg(p, "env", help="the environment whose ledger re-records the file")
    rev_arg(p, "--revision", required=True, type=revision_arg, help="the edited, applied revision")
    p.add_argument(
        "--reason", required=True, metavar="TEXT", type=text_arg, help="why, for the audit trail"
    )
    run_options(p, fleet=False)

    p = add("keys", "Ed25519 signing keys: generate a pair; adopt existing evidence")
    keys = p.add_subparsers(
        dest="keys_command", metavar="ACTION", required=True, help="generate, adopt or repair"
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
    for action, help_text, description, env_help in (
        (
            "adopt",
            "sign the ledger rows an environment already holds (after checking the files)",
            "Start signing an existing environment: re-record and sign each applied "
            "revision's ledger row whose checksum matches its file now; audited.",
            "the environment that starts signing its evidence",
        ),
        (
            "repair",
            "go on after a broken or missing evidence chain: a signed entry states the loss",
            "The one way on after ENV's evidence chain broke (or went missing): appends a "
            "signed entry stating what is missing or altered; revisions whose evidence lay in "
            "the broken span count as not run on ENV. Audited; needs the private key.",
            "the environment whose evidence chain is broken",
        ),
    ):
        k = keys.add_parser(action, help=help_text, description=description, parents=[common])
        env_arg(k, "env", help=env_help)
        k.add_argument(
            "--reason",
            required=True,
            metavar="TEXT",
            type=text_arg,
            help="why, for the audit trail",
        )
        run_options(k, fleet=False)


def run_results(out: Out, results: list[Any], verb: str = "applied") -> int:
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
        report_error(
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

    _no_out(args)
    return run_results(
        out, migrate(load_app(), args.env, args.to, _options(args), _fleet(args, out))
    )


def _no_out(args: argparse.Namespace) -> None:
    if args.out:
        from orchestrator.core.errors import UsageError

        raise UsageError(
            f"{args.command} writes no plan: write it with `orchestrator plan {args.env} --out "
            f"{args.out}`, then apply it with `orchestrator {args.command} {args.env} --plan "
            f"{args.out}`."
        )


def cmd_promote(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.migrate import promote

    _no_out(args)
    return run_results(out, promote(load_app(), args.env, _options(args), _fleet(args, out)))


def cmd_rollout(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.migrate import rollout

    results = rollout(load_app(), args.through, args.to, _options(args), _fleet(args, out))
    return run_results(out, results)


def cmd_downgrade(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.downgrade import downgrade

    results = downgrade(load_app(), args.env, args.to, args.reason, args.force, _options(args))
    return run_results(out, results, "reverted")


def cmd_baseline(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.downgrade import baseline

    results = baseline(load_app(), args.env, args.revision, args.reason)
    return run_results(out, results, "recorded")


def cmd_accept(args: argparse.Namespace, out: Out) -> int:
    from orchestrator.commands.accept import accept

    return run_results(
        out, accept(load_app(), args.env, args.revision, args.reason, _options(args))
    )


def cmd_keys(args: argparse.Namespace, out: Out) -> int:
    from pathlib import Path

    from orchestrator.commands import keys

    if args.keys_command == "adopt":
        return run_results(out, keys.adopt(load_app(), args.env, args.reason, _options(args)))
    if args.keys_command == "repair":
        return run_results(out, keys.repair(load_app(), args.env, args.reason, _options(args)))
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
