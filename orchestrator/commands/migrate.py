"""migrate, promote, rollout: gated, locked, audited upgrades."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.commands.live_schema import schema_check
from orchestrator.commands.schema_drift import (
    check_before_run,
    check_divergence,
    drift_since_recorded,
)
from orchestrator.core.config import Target
from orchestrator.core.errors import OrchestratorError, Refused, UsageError
from orchestrator.core.planning import refusal_message
from orchestrator.core.results import RunResult, attach_results, error_result
from orchestrator.db.database import current_heads, keep_reads
from orchestrator.evidence import ledger
from orchestrator.running.app import App, Environment, new_run_id
from orchestrator.running.fleet import FleetOptions, fan_out, select_shard
from orchestrator.running.plan_gate import check_against_plan, plan_approvals, refuse_plan
from orchestrator.running.policies import (
    approval_refusal,
    ask_approval,
    check_approval,
    describe_run,
    enforce_lint,
    lint_for,
    record_waivers,
)
from orchestrator.running.predecessor import (
    checksum_drift,
    env_py_note,
    expected_reads,
    judge,
    looking_at,
    per_developer,
    predecessor_states,
    read_connection,
    read_each,
    read_state,
    upgrade_steps,
)
from orchestrator.running.run import TargetRun

# the predecessor, read before the lock, is read again under it after a wait this long (a
# prompt, lint) or any wait for the lock: it may have moved meanwhile
REJUDGE_AFTER = 30.0

if TYPE_CHECKING:
    from orchestrator.core.planning import TargetState
    from orchestrator.evidence.plans import Plan

ONE_AT_A_TIME = FleetOptions()


@dataclass
class Options:
    approve: bool = False
    ticket: str | None = None
    lock_timeout: float | None = None
    # approvals obtained before the first run (rollout): environment -> how it was given
    approved: dict[str, str] = field(default_factory=dict)
    plan: Plan | None = None  # `--plan FILE`: run exactly that reviewed plan


def migrate(
    app: App, env_name: str, to: str | None, options: Options, fleet: FleetOptions = ONE_AT_A_TIME
) -> list[RunResult]:
    env = app.environment(env_name)
    if options.plan is not None:  # judged first: a plan for another env says so, whatever else
        if to is not None:
            raise UsageError("--to and --plan: a plan names its own target revision; drop --to.")
        refuse_plan(app, options.plan, env.name)
        destination = options.plan.to
    else:
        destination = app.resolve(to or "head")
    targets = select_shard(env.targets, fleet.shard)
    env.signer  # noqa: B018 -- a signing environment without its key: exit 2, nothing written
    return migrate_each(app, env, targets, destination, options, fleet)


def settled(app: App, target: Target, connection: Connection, heads: Sequence[str]) -> bool:
    """At its target with every file as it ran, is there still something for a run to do
    here? A run left open (killed: to be recorded as interrupted), or a schema that seems
    to have drifted (confirmed, and recorded, under the lock)."""
    if ledger.runs_without_end(connection):
        return False
    env = app.envs.get(target.env)
    if env.policy.schema_drift == "off":
        return True
    return not drift_since_recorded(connection, heads, schema_check(app, target), env.schemas)


def nothing_to_do(target: Target, run_id: str | None = None) -> RunResult:
    return RunResult(
        target.env, target.name, run_id or new_run_id(), "succeeded", message="nothing to do"
    )


def settled_targets(app: App, targets: Sequence[Target], destination: str) -> set[str]:
    """The databases of a fleet with nothing to do, read in threads before any run starts:
    a re-run over 500 databases at head costs a quick read of each, not a run of each. The
    same test as a run's own; any doubt (an error, a move to make) leaves it to the run."""

    def at_rest(target: Target) -> bool:
        try:
            with looking_at(app, target) as connection:
                state = read_state(connection, app.graph, target.name)
                return (
                    not upgrade_steps(app, state.heads, destination, target.env)
                    and not checksum_drift(app, state)
                    and settled(app, target, connection, state.heads)
                )
        except (OrchestratorError, SQLAlchemyError):
            return False

    if len(targets) < 2:  # one database: its run reads it anyway
        return set()
    return {t.name for t, idle in zip(targets, read_each(targets, at_rest), strict=True) if idle}


def migrate_each(
    app: App,
    env: Environment,
    targets: list[Target],
    destination: str,
    options: Options,
    fleet: FleetOptions,
) -> list[RunResult]:
    idle = settled_targets(app, targets, destination)

    def work(target: Target) -> RunResult:
        if target.name in idle:
            return nothing_to_do(target)
        return migrate_target(app, target, destination, options)

    return each_target(app, env, targets, work, fleet)


def each_target(
    app: App,
    env: Environment,
    targets: list[Target],
    work: Callable[[Target], RunResult],
    fleet: FleetOptions,
) -> list[RunResult]:
    """One database: run it here, errors propagate. A fleet: fan out, collect outcomes."""
    if len(targets) == 1 and fleet == ONE_AT_A_TIME:
        return [work(targets[0])]
    if env.predecessor is None or env.predecessor.public_keys is None:
        # read the predecessor once, before forking workers; a signing predecessor's
        # evidence may come from a plan instead, and then its database is never opened
        predecessor_states(app, env.config)
    return fan_out(targets, work, fleet)


def migrate_target(app: App, target: Target, destination: str, options: Options) -> RunResult:
    run = TargetRun(
        app, target, "migrate", ticket=options.ticket, lock_timeout=options.lock_timeout
    )
    try:
        with keep_reads():  # the predecessor: one connection for every read of this run
            return _migrate(app, run, destination, options)
    except OrchestratorError as exc:
        run.fail_details(exc)
        failed = error_result(run.env.name, target.name, run.run_id, exc, run.applied)
        failed.audit_head = run.audit.head
        failed.evidence_head = run.evidence.head() if run.evidence is not None else None
        attach_results(exc, [failed])
        raise
    finally:
        run.close()
        app.predecessor_cache.pop(target.env, None)  # it may have moved: successors re-read it


def _migrate(app: App, run: TargetRun, destination: str, options: Options) -> RunResult:
    state = run.read()
    revisions = upgrade_steps(app, state.heads, destination, run.where)
    drifted = checksum_drift(app, state)
    if not revisions and not drifted:
        with run.reading() as connection:
            if settled(app, run.target, connection, state.heads):  # cheap, unlocked
                return nothing_to_do(run.target, run.run_id)
        # A run killed after its last revision committed left no end: at the target, yet not
        # done. Take the lock (a live run finishes first) and record the dead one as interrupted.
        run.start(from_revision=",".join(state.heads) or None, to_revision=destination)
        with run.locked():
            run.close_dead_runs()
            check_before_run(run, run.read().heads)
        done = run.finish(to_revision=destination)
        done.message = "nothing to do"
        return done
    if revisions:
        # what it will connect to, connected while it reads and judges (a plan's evidence
        # stands for the predecessor: not read)
        run.open_ahead(predecessor=options.plan is None)
        app.project.script  # noqa: B018 -- a revision that fails to import: named, exit 2
    # lint first, so that the waivers in force are on every event of the run, run.started too
    linted = lint_for(app, run.env, revisions)
    record_waivers(run, linted.findings)
    plan, evidence = options.plan, None
    if plan is not None:
        run.audit.common["plan_sha256"] = plan.sha256
        run.audit.common["plan_approvals"] = plan_approvals(app, plan, run.env.name) or None
    run.start(from_revision=",".join(state.heads) or None, to_revision=destination)
    if plan is None and run.env.policy.require_plan:
        run.refuse(
            f"Refused: {run.env.name} runs only reviewed plans (policy.require_plan). Make one "
            f"with `orchestrator plan {run.env.name} --out plan.json`, have it approved "
            f"(`orchestrator plan approve plan.json --key-env VAR`), then run "
            f"`orchestrator migrate {run.env.name} --plan plan.json`."
        )
    if plan is not None:
        evidence = check_against_plan(app, run, plan, state.heads, revisions)
    if drifted:
        run.refuse(
            f"Refused: {', '.join(drifted)} changed since {run.where} ran it (checksum drift). "
            "Restore the file as it ran, or downgrade below it and upgrade again.",
            drift=drifted,
        )
    steps = judge(app, run.env, revisions, evidence=evidence, own=run.reading)
    judged_at = time.monotonic()
    if any(s.blocked for s in steps):
        run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
    same_env_py(app, run, evidence)
    check_approval(app, run, options.approve, revisions, given=options.approved.get(run.env.name))
    enforce_lint(run, linted)
    with run.locked():
        run.close_dead_runs()
        state = run.read()  # another run may have moved it while we waited
        revisions = upgrade_steps(app, state.heads, destination, run.where)
        if not revisions:
            return run.finish(message="already at target")
        if plan is not None:  # it may have moved while we waited: the plan must still hold
            evidence = check_against_plan(app, run, plan, state.heads, revisions, render=False)
        # judged again on the predecessor as it is now where a wait (for the lock, a prompt)
        # came since it was read: else the one read of it stands (SPEC: one read)
        fresh = run.waited or time.monotonic() - judged_at > REJUDGE_AFTER
        steps = judge(app, run.env, revisions, fresh=fresh, evidence=evidence, own=run.reading)
        if any(s.blocked for s in steps):
            run.refuse(refusal_message(run.where, run.env.promotes_from, steps), steps)
        check_before_run(run, state.heads)
        run.witness(app.predecessor_cache.get(run.env.promotes_from or "", []))
        run.expected_reads = expected_reads(app, run.env, revisions, evidence)
        run.audit.emit(
            "gate.passed",
            revisions=list(revisions),
            predecessor=run.env.promotes_from,
            not_gated=per_developer(app, run.env.promotes_from),  # said, not silently skipped
        )
        project = app.project

        def execute(connection: Connection, hook: Callable[..., None]) -> None:
            project.run(connection, revisions, "up", hook)

        run.apply(revisions, "up", execute)
        check_divergence(app, run)
        return run.finish(to_revision=destination)


def same_env_py(app: App, run: TargetRun, evidence: list[TargetState] | None) -> None:
    """env.py (and what it imports) not as the predecessor's last run had it: recorded as
    `env_py.differs`, or refused where `policy.same_env_py: refuse`."""
    note = env_py_note(app, run.env, evidence)
    if note is None:
        return
    if run.env.policy.same_env_py == "refuse":
        run.refuse(
            f"Refused (policy.same_env_py: refuse): {note}. Run {run.env.name} from the code "
            f"{run.env.promotes_from} ran with, or run {run.env.promotes_from} again with this one."
        )
    run.audit.emit("env_py.differs", message=note, policy="warn")


def promote(
    app: App, env_name: str, options: Options, fleet: FleetOptions = ONE_AT_A_TIME
) -> list[RunResult]:
    env = app.environment(env_name)
    predecessor = env.predecessor
    if predecessor is None:
        raise UsageError(
            f"{env.name} promotes from nothing: it is the first environment. Use migrate."
        )
    if options.plan is not None:  # the plan says how far, from the predecessor's evidence
        return migrate(app, env_name, None, options, fleet)
    heads: set[tuple[str, ...]] = set()
    for target in predecessor.targets:
        with read_connection(target) as connection:
            heads.add(current_heads(connection))
    if len(heads) != 1:
        raise Refused(
            f"Refused: the databases of {predecessor.name} are at different revisions "
            f"({', '.join(sorted(','.join(h) or 'base' for h in heads))}); "
            f"finish {predecessor.name} first."
        )
    (pred_heads,) = heads
    if not pred_heads:
        raise Refused(f"Refused: {predecessor.name} has run nothing yet; nothing to promote.")
    if len(pred_heads) > 1:
        raise UsageError(f"{predecessor.name} has several heads ({', '.join(pred_heads)}).")
    targets = select_shard(env.targets, fleet.shard)
    env.signer  # noqa: B018 -- its key first: exit 2, nothing written
    return migrate_each(app, env, targets, pred_heads[0], options, fleet)


def rollout(
    app: App, through: str, to: str | None, options: Options, fleet: FleetOptions = ONE_AT_A_TIME
) -> list[RunResult]:
    """Each environment on the path to `through`, in order; stop at the first failure."""
    results: list[RunResult] = []
    destination = app.resolve(to or "head")
    # every environment's databases resolved first: a missing variable for the last one
    # must not show up after the first ones have been migrated
    envs = [app.environment(name) for name in app.envs.path_to(through)]
    path = [(env, env.targets) for env in envs]
    for env in envs:  # and every signing key, for the same reason
        env.signer  # noqa: B018
    # and every approval asked for before anything runs: a rollout refused at prod must not
    # have migrated dev and staging first
    path = [(env, select_shard(targets, fleet.shard)) for env, targets in path]
    options.approved.update(approve_path(app, path, destination, options))
    for env, targets in path:
        try:
            done = migrate_each(app, env, targets, destination, options, fleet)
        except OrchestratorError as exc:
            attach_results(exc, results)
            raise
        results.extend(done)
        if any(r.exit_code for r in done):
            break
    return results


def approve_path(
    app: App, path: list[tuple[Environment, list[Target]]], destination: str, options: Options
) -> dict[str, str]:
    """Approval for each environment of the path that requires it, before the first run:
    --approve, or its name typed on a terminal after seeing what it would run. A refusal is
    recorded on that environment's databases (run.refused), nothing runs anywhere."""
    given: dict[str, str] = {}
    for env, targets in path:
        if not env.config.policy.require_approval or options.approve:
            continue
        pending = {t.name: _pending(app, t, destination) for t in targets}
        if not any(pending.values()):
            continue  # nothing to run there: its run asks nothing either
        summary = "\n".join(
            describe_run(app, env.name if name == env.name else f"{env.name}/{name}", revs)
            for name, revs in pending.items()
            if revs
        )
        how = ask_approval(app, env.name, summary)
        if how == "typed":
            given[env.name] = how
            continue
        message = (
            f"Refused: the typed name {how!r} does not match {env.name!r}."
            if how is not None
            else approval_refusal(env.name)
        ) + f" Nothing was run: approval for {env.name} is checked before the rollout starts."
        refused = [_record_refusal(app, t, destination, message) for t in targets]
        exc = Refused(message)
        attach_results(exc, refused)
        raise exc
    return given


def _pending(app: App, target: Target, destination: str) -> list[str]:
    with read_connection(target) as connection:
        state = read_state(connection, app.graph, target.name)
    return upgrade_steps(app, state.heads, destination, target.env)


def _record_refusal(app: App, target: Target, destination: str, message: str) -> RunResult:
    """run.started and run.refused on the database's audit trail; nothing else is touched."""
    run = TargetRun(app, target, "migrate")
    try:
        run.start(to_revision=destination)
        run.audit.emit("run.refused", outcome="refused", error=message)
        return error_result(run.env.name, target.name, run.run_id, Refused(message))
    finally:
        run.close()
