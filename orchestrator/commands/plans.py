"""plan --out, plan show, plan approve: the release plan a reviewer approves (what a run
checks of it before it runs exactly that: orchestrator/running/plan_gate.py)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.commands.status import env_chain_advice, own_chain_problem
from orchestrator.core.errors import Refused, UsageError
from orchestrator.core.planning import refusal_message
from orchestrator.evidence import ledger, plans
from orchestrator.running.app import App
from orchestrator.running.plan_chain import chain_segment
from orchestrator.running.plan_gate import approver_keys, entry_of, read_plan, writer_keys
from orchestrator.running.policies import lint_refusal, lint_revisions
from orchestrator.running.predecessor import (
    judge,
    predecessor_states,
    read_connection,
    read_state,
    upgrade_steps,
)

__all__ = ["approve_plan", "make_plan", "read_plan", "show", "writer_key"]


def make_plan(app: App, env_name: str, to: str | None, ttl: str, out: Path) -> dict[str, Any]:
    """Write the plan file for `env_name`; refuse (exit 3) a plan the gate or lint would
    refuse, so that nobody reviews a change that cannot run."""
    env = app.envs.get(env_name)
    try:
        lifetime = plans.parse_ttl(ttl)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    destination = app.resolve(to or "head")
    targets: list[dict[str, Any]] = []
    revisions: list[str] = []
    for target in app.environment(env.name).targets:
        with read_connection(target) as connection:
            state = read_state(connection, app.graph, f"{env.name}/{target.name}")
            broken = own_chain_problem(app, env, connection)
        targets.append({"name": target.name, "heads": list(state.heads)})
        if destination not in state.heads:
            path = upgrade_steps(app, state.heads, destination, env.name)
            revisions += [r for r in path if r not in revisions]
            if broken is not None:  # its run would refuse before writing: nothing to review
                raise Refused(f"Refused: {broken}. {env_chain_advice(env.name)}.")
    # read fresh: the predecessor's chain is checked against the heads this environment's
    # own runs witnessed, so a plan is never written from a chain rolled back below them
    predecessors = (
        predecessor_states(app, env, fresh=True) if env.promotes_from and revisions else []
    )
    steps = judge(app, env, revisions)
    if any(s.blocked for s in steps):
        raise Refused(refusal_message(env.name, env.promotes_from, steps))
    findings, problem = lint_revisions(app, env, revisions)
    blocking = [f for f in findings if not f.waived]
    if env.policy.lint == "error" and problem:
        raise Refused(f"Refused: lint is required on {env.name} but could not run: {problem}")
    if env.policy.lint == "error" and blocking:  # the same advice as `migrate`'s refusal
        raise Refused(lint_refusal(app, env, blocking))

    rendered = app.project.offline_sql(revisions, "postgresql") if revisions else None
    evidence, chains = _evidence(app, env.promotes_from, revisions)
    key = writer_key(app, env.name)
    body = plans.build(
        env=env.name,
        predecessor=env.promotes_from,
        to=destination,
        targets=targets,
        steps=[_step(app, rev, rendered, evidence) for rev in revisions],
        evidence=evidence,
        lint=[_finding(f) for f in findings],
        waivers=sorted({f"{f.revision}:{f.rule}" for f in findings if f.waived}),
        author=app.actor,
        git_sha=app.git_sha,
        created=datetime.now(UTC),
        ttl=lifetime,
    )
    # the env.py each predecessor database last ran with: the applying job compares its own
    body["env_py"] = {s.name: s.env_py for s in predecessors if s.env_py is not None}
    # per predecessor database, the segment of its evidence chain the steps' rows are in, up
    # to the head witnessed now: the applying job verifies it with the predecessor's key
    body["evidence_chain"] = chains
    envelope: dict[str, Any] = {
        "payloadType": plans.PLAN_TYPE,
        "payload": _b64(plans.canonical(body)),
        "signatures": [],
    }
    if key is not None:  # the writer's signature: expiry, steps and evidence are sealed
        from orchestrator.core import signing

        envelope = signing.add_signature(envelope, key)
    _write(out, envelope)
    plan = plans.read(json.dumps(envelope))
    return {
        "file": str(out),
        "env": env.name,
        "to": destination,
        "steps": plan.revisions,
        "plan_sha256": plan.sha256,
        "expires_at": body["expires_at"],
    }


def writer_key(app: App, env_name: str) -> Any:
    """The private key `plan --out` signs with: the predecessor's where this job holds it,
    else the environment's own; None where neither signs. Exit 2 where one signs but this
    job holds neither key: an unsigned plan would be refused at apply."""
    names = list(writer_keys(app, env_name))
    for name in names:
        try:
            signer = app.environment(name).signer
        except UsageError:
            continue
        if signer is not None:
            return signer.key
    if not names:
        return None
    variables = [app.envs.get(n).signing.key_env for n in names]  # type: ignore[union-attr]
    raise UsageError(
        f"plan --out signs the plan with the key of {' or '.join(names)}, and this job holds "
        f"neither: set {' or '.join(variables)} to that environment's private key."
    )


def _step(
    app: App, rev: str, rendered: Any, evidence: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    sql = rendered.sql.get(rev) if rendered is not None else None
    reads: dict[str, str] = {}  # what its runs on the predecessor read, from their rows
    for rows in evidence.values():
        for row in rows:
            entry = entry_of(row)
            if entry is not None and entry.revision == rev:
                reads.update(entry.files_read or {})
    return {
        "revision": rev,
        "checksum": app.graph.get(rev).checksum,
        "direction": "up",
        "doc": app.graph.get(rev).doc,
        "sql": sql,
        "sql_sha256": plans.sql_digest(sql) if sql is not None else None,
        "sql_problem": rendered.failed.get(rev) if rendered is not None else None,
        "reads": reads,
    }


def _finding(finding: Any) -> dict[str, Any]:
    return {k: v for k, v in finding.__dict__.items() if not k.startswith("_")}


def _evidence(
    app: App, predecessor: str | None, revisions: Sequence[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Each predecessor database's ledger rows of the planned revisions, as stored there
    (with their signature envelopes where the predecessor signs), and where it signs the
    segment of its verified evidence chain that holds them."""
    if predecessor is None or not revisions:
        return {}, {}
    wanted = set(revisions)
    keys = app.environment(predecessor).public_keys
    evidence, chains = {}, {}
    for target in app.environment(predecessor).targets:
        with read_connection(target) as connection:
            latest = ledger.latest_ledger(connection)
            segment = chain_segment(connection, keys, predecessor, revisions) if keys else None
        evidence[target.name] = [e.as_row() for rev, e in latest.items() if rev in wanted]
        if segment is not None:
            chains[target.name] = segment
    return evidence, chains


def approve_plan(app: App, path: Path, key_env: str) -> dict[str, Any]:
    """Add a signature over the plan's payload with the private key in `key_env`."""
    from orchestrator.core import signing

    plan = read_plan(path)
    key = _private_key(app, key_env)
    keyid = signing.keyid(key.public_key())
    listed = {signing.keyid(k): name for name, k in approver_keys(app, plan.env).items()}
    if listed and keyid not in listed:  # refused here, not first at apply: nothing added
        raise Refused(
            f"Refused: the key in {key_env} (key id {keyid[:16]}) is not one of "
            f"{plan.env}'s plan approvers (policy.plan_approvers: {', '.join(listed.values())}); "
            "its approval would not count. Nothing was added to the plan."
        )
    if any(s.get("keyid") == keyid for s in plan.envelope["signatures"] if isinstance(s, dict)):
        return {"file": str(path), "plan_sha256": plan.sha256, "keyid": keyid, "added": False}
    _write(path, signing.add_signature(plan.envelope, key))
    return {"file": str(path), "plan_sha256": plan.sha256, "keyid": keyid, "added": True}


def _private_key(app: App, variable: str) -> Any:
    from orchestrator.evidence.keys import read_private_key

    where = f"plan approve signs with the key in --key-env {variable}"
    return read_private_key(variable, app.environ, app.settings.project_dir, where)


# -- show ----------------------------------------------------------------------------------


def approver_note(app: App, plan: plans.Plan) -> str | None:
    """Whose approval counts for the plan's environment, said for the reviewer."""
    try:
        names = app.envs.get(plan.env).policy.plan_approvers
    except UsageError:
        return None
    if not names:
        return f"no approver list applies ({plan.env} has no policy.plan_approvers)"
    return f"counted only from {', '.join(names)} (policy.plan_approvers of {plan.env})"


def show(plan: plans.Plan, fmt: str, path: Path, approvers: str | None = None) -> str:
    body = plan.body
    if fmt == "json":
        return json.dumps(
            {
                **body,
                "plan_sha256": plan.sha256,
                "signatures": [s.get("keyid") for s in plan.envelope["signatures"]],
            },
            indent=2,
        )
    markdown = fmt == "markdown"
    lines: list[str] = []
    title = f"Release plan for {body['env']}: {len(body['steps'])} revision(s) to {body['to']}"
    lines += [f"## {title}" if markdown else title, ""]
    facts = [
        ("plan", f"{path.name} sha256 {plan.sha256}"),
        ("made by", f"{body.get('author')} at {body.get('created_at')}, git {body.get('git_sha')}"),
        ("expires", body["expires_at"]),
        (
            "targets",
            ", ".join(f"{t['name']} at {','.join(t['heads']) or 'base'}" for t in body["targets"]),
        ),
        (
            "approvals",
            f"{len(plan.envelope['signatures'])} signature(s)"
            + (f"; {approvers}" if approvers else ""),
        ),
        ("waivers", ", ".join(body.get("waivers") or []) or "none"),
        ("evidence", _chain_note(body)),
    ]
    for key, value in facts:
        lines.append(f"- **{key}**: {value}" if markdown else f"{key:<10} {value}")
    lines.append("")
    evidence = body.get("evidence") or {}
    for step in body["steps"]:
        rev = step["revision"]
        head = f"{rev}  {step.get('doc') or ''}".rstrip()
        lines.append(f"### {head}" if markdown else f"* {head}")
        lines.append(f"  checksum {step['checksum']}, SQL sha256 {step.get('sql_sha256')}")
        for name, digest in sorted((step.get("reads") or {}).items()):
            lines.append(f"  reads {name} (sha256 {str(digest)[:12]}) as the predecessor's run did")
        for target, rows in evidence.items():
            for row in rows:
                if row.get("revision") == rev:
                    signed = "signed" if row.get("envelope") else "unsigned"
                    lines.append(
                        f"  ran on {body.get('predecessor')}/{target} by {row.get('actor')} at "
                        f"{row.get('at')} ({row.get('direction')}, checksum "
                        f"{str(row.get('checksum'))[:12]}, {signed})"
                    )
        for finding in body.get("lint") or []:
            if finding.get("revision") == rev:
                state = "waived" if finding.get("waived") else "finding"
                lines.append(f"  lint {state}: {finding.get('rule')}: {finding.get('message')}")
        if step.get("sql"):
            fence = (
                ["```sql", step["sql"].rstrip(), "```"]
                if markdown
                else ["    " + line for line in step["sql"].rstrip().splitlines()]
            )
            lines += fence
        elif step.get("sql_problem"):
            lines.append(f"  SQL could not be rendered offline: {step['sql_problem']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _chain_note(body: dict[str, Any]) -> str:
    """Which entries of the predecessor's evidence chains the plan carries."""
    chains = body.get("evidence_chain") or {}
    if not isinstance(chains, dict) or not chains:
        return "no evidence chain (the predecessor does not sign, or nothing to run)"
    parts = []
    for name, segment in sorted(chains.items()):
        head = segment.get("head") if isinstance(segment, dict) else None
        start = segment.get("start") if isinstance(segment, dict) else None
        if isinstance(head, dict) and isinstance(start, dict) and isinstance(start.get("seq"), int):
            first = start["seq"] + 1
            parts.append(f"{body.get('predecessor')}/{name} entries {first}-{head.get('seq')}")
        else:
            parts.append(f"{body.get('predecessor')}/{name}: not a chain segment")
    return "chain " + ", ".join(parts) + " (verified with its key when applied)"


# -- files ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _write(path: Path, envelope: dict[str, Any]) -> None:
    """Whole or not at all: a reviewer never sees half a plan."""
    text = json.dumps(envelope, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"Cannot write the plan {path}: {exc.strerror or exc}.") from None
