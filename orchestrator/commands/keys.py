"""keys generate, keys adopt, keys repair: make an environment's key pair; start signing the
evidence an environment already holds; go on, explicitly, after its chain broke."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.commands.live_schema import schema_check
from orchestrator.commands.migrate import Options
from orchestrator.commands.schema_drift import drift_since_recorded
from orchestrator.core import trust
from orchestrator.core.config import Target
from orchestrator.core.errors import OrchestratorError, UsageError
from orchestrator.core.logging import utc_now
from orchestrator.core.results import RunResult
from orchestrator.evidence import ledger
from orchestrator.evidence.keys import write_key_pair
from orchestrator.running.app import App
from orchestrator.running.policies import check_approval
from orchestrator.running.run import TargetRun


def generate(name: str, out_dir: Path, private_out: Path | None, force: bool) -> dict[str, Any]:
    from orchestrator.core.config.models import NAME_PATTERN

    if not NAME_PATTERN.match(name):
        raise UsageError(f"{name!r} is not a key name (letters, digits, _ . - only).")
    public_path, private_pem, keyid = write_key_pair(name, out_dir, private_out, force)
    return {
        "name": name,
        "public_key": str(public_path),
        "keyid": keyid,
        "private_key_file": None if private_out is None else str(private_out),
        "private_key": None if private_pem is None else private_pem.decode("ascii"),
    }


def adopt(app: App, env_name: str, reason: str, options: Options) -> list[RunResult]:
    """Sign the evidence an environment already holds: each applied revision's latest
    ledger row, once its checksum is checked against the file as it is now."""
    env = app.environment(env_name)
    if env.config.signing is None:
        raise UsageError(
            f"{env.name} does not sign ({env.config.source} has no `signing:` section): add "
            "`signing: {public_key: keys/NAME.pub, key_env: VARIABLE}` first."
        )
    if not reason.strip():
        raise UsageError("keys adopt needs --reason TEXT: it goes on the audit trail.")
    targets = env.targets
    env.signer  # noqa: B018 -- its key first: exit 2, nothing written
    return [_adopt_target(app, target, reason, options) for target in targets]


def _adopt_target(app: App, target: Target, reason: str, options: Options) -> RunResult:
    run = TargetRun(
        app,
        target,
        "keys adopt",
        ticket=options.ticket,
        reason=reason,
        lock_timeout=options.lock_timeout,
    )
    try:
        run.start()
        check_approval(app, run, options.approve)
        keys = app.environment(run.env.name).public_keys or ()
        run.may_start_chain = True  # adopting is how an install's evidence enters the chain
        with run.locked():
            run.close_dead_runs()
            state = run.read()
            ordered = sorted(state.applied, key=lambda r: len(app.graph.ancestors(r)))
            entries = [(r, state.ledger.get(r)) for r in ordered]
            unrecorded = [r for r, e in entries if e is None or not e.applied]
            edited = [
                r
                for r, e in entries
                if e is not None and e.applied and e.checksum != app.graph.get(r).checksum
            ]
            if edited:
                run.refuse(
                    f"Refused: {run.where}'s ledger records {', '.join(edited)} with another "
                    "checksum than the file has now; adopting would sign an edit nobody "
                    "reviewed. Restore the files, or re-record each with `orchestrator accept "
                    f"{run.env.name} --revision REV --reason TEXT` first.",
                    edited=edited,
                )
            unsigned = [
                e
                for _, e in entries
                if e is not None
                and e.applied
                and trust.ledger_row_problem(e.as_row(), keys, run.env.name, target.name)
            ]
            starting = run.evidence is not None and run.evidence.empty
            if run.evidence is not None and not starting and unsigned:
                # the chain holds this environment's evidence: a row it does not record,
                # unsigned, was written by hand; adopting it would sign a forgery
                run.refuse(
                    f"Refused: {run.where}'s ledger holds unsigned rows for "
                    f"{', '.join(e.revision for e in unsigned)}, which its signed evidence "
                    "chain does not record: written by hand, not by a run. Nothing was signed.",
                    forged=[e.revision for e in unsigned],
                )
            if starting and unsigned and len(unsigned) < len([e for _, e in entries if e]):
                signed_too = [e.revision for e in unsigned]
                run.refuse(
                    f"Refused: {run.where}'s ledger holds signed rows, and unsigned ones for "
                    f"{', '.join(signed_too)} beside them: in an environment that signs, an "
                    "unsigned row was written by hand. Nothing was signed.",
                    forged=signed_too,
                )
            if starting:  # Part 2's rows (signed one by one) enter the chain, re-signed
                unsigned = [e for _, e in entries if e is not None and e.applied]
            with run.engine.begin() as connection:
                if starting:
                    run.evidence_moved(connection, reason)
                for entry in unsigned:
                    row = ledger.revision_row(
                        revision=entry.revision,
                        checksum=entry.checksum,
                        direction=entry.direction,  # what it was: up, baseline or accepted
                        run_id=run.run_id,
                        env=run.env.name,
                        actor=app.actor,
                        at=utc_now(),
                        key=run.key,
                        target=target.name,
                        reads=entry.files_read,  # the files its run read, as the row said
                    )
                    run.record_row(connection, row)
                run.audit.emit(
                    "ledger.adopted",
                    connection=connection,
                    revisions=[e.revision for e in unsigned],
                    unrecorded=unrecorded or None,
                )
            signed = [e.revision for e in unsigned]  # signed, not applied: nothing ran
            # the recorded schema is signed again only when the live one is still it: adopting
            # must not vouch for a change made by hand. Compared with the record that verifies
            # where there is one (a newer unsigned row may be forged), else the record as it
            # stands from before signing.
            try:
                with run.engine.connect() as connection:
                    connection.execution_options(read_only=True)
                    heads = state.heads
                    check, schemas = schema_check(app, target), run.env.schemas
                    drift = drift_since_recorded(connection, heads, check, schemas)
                    if drift is None:
                        drift = drift_since_recorded(connection, heads, None, schemas)
            except SQLAlchemyError:
                drift = None  # no evidence either way: nothing to vouch for
            schema = run.record_schema() if drift == [] else None
            done = run.finish(adopted=signed, schema_fingerprint=schema)
            done.adopted = signed
            done.message = f"signed {len(unsigned)} ledger row(s) of {run.where}" + (
                f"; not in its ledger (use baseline): {', '.join(unrecorded)}" if unrecorded else ""
            )
            if drift:
                done.message += (
                    f"; its schema is no longer the one recorded, which stays unsigned "
                    f"(`orchestrator drift {run.env.name}` shows how)"
                )
            return done
    except OrchestratorError as exc:
        run.fail_details(exc)
        raise
    finally:
        run.close()


def repair(app: App, env_name: str, reason: str, options: Options) -> list[RunResult]:
    """Append a signed `repair` entry to each database of `env_name` whose evidence chain is
    broken or missing (or whose audit rows since the last end do not verify)."""
    env = app.environment(env_name)
    if env.config.signing is None:
        raise UsageError(f"{env.name} does not sign: it has no evidence chain to repair.")
    if not reason.strip():
        raise UsageError("keys repair needs --reason TEXT: it goes on the audit trail.")
    env.signer  # noqa: B018 -- its key first: exit 2, nothing written
    return [_repair_target(app, target, reason, options) for target in env.targets]


def _repair_target(app: App, target: Target, reason: str, options: Options) -> RunResult:
    run = TargetRun(
        app, target, "keys repair", ticket=options.ticket, reason=reason,
        lock_timeout=options.lock_timeout,
    )  # fmt: skip
    try:
        run.start()
        check_approval(app, run, options.approve)
        run.repairing = True  # verified, but not refused: what is wrong is what it records
        with run.locked():
            run.close_dead_runs()
            with run.engine.begin() as connection:
                problem = run.evidence_repair(connection, reason)
                run.audit.emit(
                    "evidence.repaired" if problem else "evidence.intact",
                    connection=connection,
                    problem=problem,
                )
            done = run.finish()
            done.message = (
                f"recorded on {run.where}: {problem}; the chain goes on from here"
                if problem
                else f"{run.where}'s evidence verifies: nothing to repair"
            )
            return done
    except OrchestratorError as exc:
        run.fail_details(exc)
        raise
    finally:
        run.close()
