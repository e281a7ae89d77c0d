"""What a run checks of a release plan before it runs exactly that: the plan file read,
its signatures (writer, approvers), its targets, steps, reads and SQL, and the predecessor's
evidence it carries. Shared by `migrate --plan` and plain `alembic -x plan=FILE`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.core.config import target_names
from orchestrator.core.errors import Refused, UsageError
from orchestrator.core.planning import LedgerEntry, TargetState, refusal_message
from orchestrator.evidence import ledger, plans
from orchestrator.evidence.plans import Plan
from orchestrator.running.app import App
from orchestrator.running.plan_chain import behind_the_plan, plan_chain
from orchestrator.running.predecessor import file_digest, judge, own_witnessed
from orchestrator.running.run import TargetRun


def read_plan(path: Path) -> plans.Plan:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"The plan file {path} does not exist.") from None
    except OSError as exc:
        raise UsageError(f"The plan file {path} cannot be read: {exc.strerror or exc}.") from None
    try:
        return plans.read(data)
    except plans.PlanFileError as exc:
        raise UsageError(
            f"{path} is not a plan file this version can apply: {exc}. Make one with "
            "`orchestrator plan ENV --out FILE`."
        ) from None
    except plans.PlanTampered as exc:
        raise Refused(f"Refused: the plan {path} was altered: {exc}.") from None


def approver_keys(app: App, env_name: str) -> dict[str, Any]:
    """policy.plan_approvers: key file -> public key."""
    from orchestrator.core import signing

    keys = {}
    for name in app.envs.get(env_name).policy.plan_approvers:
        path = app.settings.project_dir / name
        try:
            keys[name] = signing.load_public_key(path.read_bytes())
        except (OSError, signing.KeyMaterialError) as exc:
            raise UsageError(
                f"policy.plan_approvers of {env_name}: {name} is not a readable Ed25519 "
                f"public key ({getattr(exc, 'strerror', None) or exc})."
            ) from None
    return keys


def writer_keys(app: App, env_name: str) -> dict[str, tuple[Any, ...]]:
    """The environments whose key may write `env_name`'s plans (its predecessor, usually
    the job that writes it; itself), with their public keys, where they sign."""
    env = app.envs.get(env_name)
    names = [n for n in (env.promotes_from, env.name) if n is not None]
    return {n: keys for n in names if (keys := app.environment(n).public_keys) is not None}


def check_plan(app: App, plan: plans.Plan, env_name: str) -> list[str]:
    """Refusals of the whole plan (environment, expiry, approval, alteration)."""
    from orchestrator.core import signing

    return plans.envelope_refusals(
        plan,
        env_name,
        datetime.now(UTC),
        approver_keys(app, env_name),
        signing.verify,
        writer_keys(app, env_name),
    )


def approvals(app: App, plan: plans.Plan, env_name: str) -> list[str]:
    from orchestrator.core import signing

    return plans.approvals(plan, approver_keys(app, env_name), signing.verify)


def plan_approvals(app: App, plan: Plan, env: str) -> list[str]:
    return approvals(app, plan, env)


def refuse_plan(app: App, plan: Plan, env: str) -> None:
    """Refusals that hold for every database: another environment's plan, an expired one,
    one altered since its approval or lacking a required approval."""
    causes = check_plan(app, plan, env)
    if causes:
        raise Refused(
            f"Refused: {env} will not run the plan {plan.sha256[:12]}: " + "; ".join(causes) + "."
        )


def check_against_plan(
    app: App,
    run: TargetRun,
    plan: Plan,
    heads: tuple[str, ...],
    revisions: list[str],
    render: bool = True,
) -> list[TargetState] | None:
    """Refuse (exit 3, every cause named) unless this database may run exactly the plan;
    the predecessor's evidence the gate judges (None: read the predecessor live)."""
    causes = []
    checksums = {rev: app.graph.get(rev).checksum for rev in plan.revisions if rev in app.graph}
    resumed = _applied_by_this_plan(app, run, plan, heads)
    target = plans.target_refusal(plan, run.target.name, heads, checksums, resumed)
    if target is not None:
        causes.append(target)
    unplanned = [rev for rev in revisions if rev not in plan.revisions]
    if unplanned and target is None:
        causes.append(f"{', '.join(unplanned)} would run but are not in the plan")
    if target is None and revisions:
        causes += plans.read_refusals(plan, revisions, file_digest(app))
        if render:  # what would run is what the reviewer read: the same SQL
            rendered = app.project.offline_sql(revisions, "postgresql")
            causes += plans.sql_refusals(plan, rendered.sql)
    if causes:
        run.refuse(
            f"Refused: {run.where} will not run the plan {plan.sha256[:12]}: "
            + "; ".join(causes)
            + ".",
            plan_refusals=causes,
        )
    predecessor = run.env.promotes_from
    readable = _readable(app, predecessor)
    # a job that cannot read the predecessor believes the plan's chain segment only as far
    # as it is no older than what this database's own runs already saw of the predecessor
    seen = None if readable else own_witnessed(app, run.env, run.reading)
    evidence = plan_evidence(app, plan, seen)
    if evidence is not None and revisions and readable:
        # this job can read the predecessor: its chain must still extend the head the plan
        # witnessed (not rolled back, not replaced), and its evidence hold there now
        stale = behind_the_plan(app, plan)
        if stale:
            run.refuse(
                f"Refused: {run.where} will not run the plan {plan.sha256[:12]}: "
                + "; ".join(stale)
                + ".",
                plan_refusals=stale,
            )
        live = judge(app, run.env, revisions, fresh=True, own=run.reading)
        if any(s.blocked for s in live):
            run.refuse(refusal_message(run.where, predecessor, live), live)
    elif evidence is not None and predecessor is not None:
        # what the gate relies on, and this run's end entry witnesses (run.witness reads
        # the states the gate judged): the plan's verified chain heads
        app.predecessor_cache[predecessor] = evidence
    return evidence


def _applied_by_this_plan(app: App, run: TargetRun, plan: Plan, heads: Sequence[str]) -> bool:
    """Whether the steps of the plan applied here since it was made were all applied by runs
    of this very plan (one stopped by SIGTERM): then the plan goes on where it stopped."""
    planned = plan.heads(run.target.name)
    if planned is None or sorted(heads) == sorted(planned) or list(heads) == [plan.to]:
        return False  # nothing to resume: judged as it is
    state = run.read()
    before = set().union(*(app.graph.ancestors(h) for h in planned))
    done = [r for r in plan.revisions if r in state.applied and r not in before]
    if not done or any(r not in state.ledger for r in done):
        return False
    with run.engine.connect() as connection:
        for run_id in {state.ledger[r].run_id for r in done}:
            started = ledger.query_audit(
                connection, ledger.AuditFilter(event="run.started", run_id=run_id)
            )
            if not any(e.get("plan_sha256") == plan.sha256 for e in started):
                return False
    return True


def _readable(app: App, env: str | None) -> bool:
    """Whether this job has the URLs of `env`'s databases."""
    if env is None:
        return False
    try:
        app.environment(env).targets  # noqa: B018 -- resolvable here?
    except UsageError:
        return False
    return True


def plan_evidence(
    app: App, plan: plans.Plan, witnessed: Mapping[str, Any] | None = None
) -> list[TargetState] | None:
    """The predecessor's databases as the plan shows them, where the predecessor signs (so
    its public key alone proves them): its signed ledger rows, believed as far as the
    segment of its evidence chain the plan carries verifies (every entry from the oldest
    planned revision's to the head the plan witnessed, the newest signed by the
    predecessor's key). `witnessed`: per predecessor database, the newest head this
    database's own signed entries saw: a plan whose evidence ends below it or diverges
    from it is refused. None where the predecessor does not sign (the gate then reads the
    predecessor live, as without a plan)."""
    predecessor = app.envs.get(plan.env).promotes_from
    if predecessor is None:
        return []
    keys = app.environment(predecessor).public_keys
    if keys is None:
        return None
    states = []
    for name, rows in plan.body["evidence"].items():
        entries = {}
        for row in rows:
            entry = entry_of(row)
            if entry is not None:
                entries[entry.revision] = entry
        applied = frozenset(r for r, e in entries.items() if e.applied)
        env_py = plan.body.get("env_py", {}).get(name)
        broken, proven, head = plan_chain(plan, name, predecessor, keys, witnessed or {})
        states.append(
            TargetState(
                name,
                applied,
                entries,
                keys,
                predecessor,
                env_py=env_py,
                broken=broken,
                proven=proven,
                head=head,
            )
        )
    # every database the predecessor's configuration lists, as this checkout configures it:
    # one the plan's evidence leaves out has run nothing, as far as the plan proves
    listed = target_names(app.envs.get(predecessor), app.settings.project_dir)
    covered = set(plan.body["evidence"])
    states += [
        TargetState(n, frozenset(), {}, keys, predecessor) for n in listed if n not in covered
    ]
    return states


def entry_of(row: Any) -> LedgerEntry | None:
    """A predecessor's ledger row as the plan carries it; None for what is not one."""
    if not isinstance(row, dict):
        return None
    fields = {k: row.get(k) for k in _ENTRY_FIELDS}
    if not all(isinstance(fields[k], str) for k in _ENTRY_FIELDS[:5]):
        return None
    return LedgerEntry(**fields)  # type: ignore[arg-type]  # the five checked above


_ENTRY_FIELDS = (
    "revision",
    "checksum",
    "direction",
    "run_id",
    "at",
    "env",
    "actor",
    "envelope",
    "reads",
)
