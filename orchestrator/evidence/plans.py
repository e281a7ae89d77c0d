"""Pure: release plans. What `plan --out` records, and every check `migrate --plan` makes
before it runs exactly that. Plain data in, plain data (or a list of refusals) out; the
shell (commands/plans.py) reads files, databases and keys.

A plan is a DSSE envelope (orchestrator.core.signing) whose payload is the canonical JSON below.
Approvals are further signatures over the very same payload bytes, so any change to the
plan after approval breaks them. The predecessor's evidence travels inside it as the
predecessor's own signed ledger rows, which the applying job verifies with the
predecessor's public key alone: it needs no access to the predecessor's database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PLAN_TYPE = "application/vnd.alembic-orchestrator.plan+json"
FORMAT = 1


class PlanFileError(ValueError):
    """The file is not a plan this version can read (exit 2): missing, truncated, not JSON,
    another format version."""


class PlanTampered(ValueError):
    """The envelope is well-formed but its payload is not a plan (exit 3): it was altered."""


@dataclass(frozen=True)
class Plan:
    envelope: dict[str, Any]
    payload: bytes
    body: dict[str, Any]

    @property
    def sha256(self) -> str:
        """The plan's identity on every audit event: the sha256 of the signed payload."""
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def env(self) -> str:
        return str(self.body["env"])

    @property
    def to(self) -> str:
        return str(self.body["to"])

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.body["steps"])

    @property
    def revisions(self) -> list[str]:
        return [s["revision"] for s in self.steps]

    def heads(self, target: str) -> list[str] | None:
        for entry in self.body["targets"]:
            if entry["name"] == target:
                return list(entry["heads"])
        return None


def canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sql_digest(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def parse_ttl(value: str) -> timedelta:
    """`90s`, `30m`, `12h`, `7d`: how long a plan may be applied after it was made (at most
    ten years: an expiry beyond any calendar is no expiry)."""
    text = value.strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise ValueError(f"--ttl {value!r}: expected a duration such as 90s, 30m, 24h or 7d")
    try:
        ttl = timedelta(**{units[text[-1]]: int(text[:-1])})
    except OverflowError:
        ttl = MAX_TTL + MAX_TTL
    if ttl > MAX_TTL:
        raise ValueError(f"--ttl {value!r} is longer than ten years: give a shorter duration")
    return ttl


MAX_TTL = timedelta(days=3653)


def build(
    *,
    env: str,
    predecessor: str | None,
    to: str,
    targets: Sequence[Mapping[str, Any]],
    steps: Sequence[Mapping[str, Any]],
    evidence: Mapping[str, Sequence[Mapping[str, Any]]],
    lint: Sequence[Mapping[str, Any]],
    waivers: Sequence[str],
    author: str,
    git_sha: str | None,
    created: datetime,
    ttl: timedelta,
) -> dict[str, Any]:
    """The plan's payload. `targets`: each database's name and heads now; `steps`: revision,
    checksum, direction, sql, sql_sha256, doc; `evidence`: for each predecessor database,
    its ledger rows (signed where it signs) of the steps' revisions."""
    return {
        "format": FORMAT,
        "env": env,
        "predecessor": predecessor,
        "to": to,
        "targets": [dict(t) for t in targets],
        "steps": [dict(s) for s in steps],
        "evidence": {name: [dict(r) for r in rows] for name, rows in evidence.items()},
        "lint": [dict(f) for f in lint],
        "waivers": list(waivers),
        "author": author,
        "git_sha": git_sha,
        "created_at": _iso(created),
        "expires_at": _iso(created + ttl),
    }


def read(text: str | bytes) -> Plan:
    """Parse a plan file; PlanFileError for what is not a plan file at all, PlanTampered for
    an envelope whose payload was changed into something that is not a plan."""
    try:
        envelope = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise PlanFileError("it is not JSON (truncated, or not a plan file)") from None
    if not isinstance(envelope, dict) or not {"payloadType", "payload"} <= envelope.keys():
        raise PlanFileError("it is not a signing envelope (no payloadType and payload)")
    if envelope["payloadType"] != PLAN_TYPE:
        raise PlanFileError(f"its payloadType is {envelope['payloadType']!r}, not a plan")
    if not isinstance(envelope.get("signatures", []), list):
        raise PlanFileError("its signatures are not a list")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        body = json.loads(payload)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise PlanTampered("its payload is not the JSON that was planned") from None
    if not isinstance(body, dict) or "format" not in body:
        raise PlanTampered("its payload is not a plan")
    if body["format"] != FORMAT:
        raise PlanFileError(
            f"it is a plan of format {body['format']!r}; this version reads format {FORMAT}"
        )
    missing = {"env", "to", "targets", "steps", "evidence", "expires_at"} - body.keys()
    if missing:
        raise PlanTampered(f"its payload lacks {', '.join(sorted(missing))}")
    problem = shape_problem(body)
    if problem is not None:
        raise PlanFileError(problem)
    envelope.setdefault("signatures", [])
    return Plan(envelope, payload, body)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def shape_problem(body: Mapping[str, Any]) -> str | None:
    """What makes a payload with every key not a plan (a list where an object belongs, a
    step without its checksum...), named; None when every part has its shape. Checked
    when the file is read, so nothing later meets a plan it cannot handle."""
    for key in ("env", "to", "expires_at"):
        if not isinstance(body[key], str):
            return f"its {key} is not a string"
    targets = body["targets"]
    if not isinstance(targets, list):
        return "its targets are not a list"
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or not isinstance(target.get("name"), str):
            return f"its target #{i + 1} has no name"
        if not _strings(target.get("heads")):
            return f"its target {target['name']} has no list of heads"
    if not isinstance(body["steps"], list):
        return "its steps are not a list"
    for i, step in enumerate(body["steps"]):
        if not isinstance(step, dict):
            return f"its step #{i + 1} is not an object"
        for key in ("revision", "checksum"):
            if not isinstance(step.get(key), str):
                return f"its step #{i + 1} has no {key}"
        if not isinstance(step.get("sql_sha256"), (str, type(None))):
            return f"its step {step['revision']} has a sql_sha256 that is not a string"
        reads = step.get("reads", {})
        if not isinstance(reads, dict) or not all(isinstance(v, str) for v in reads.values()):
            return f"its step {step['revision']} has reads that are not path: sha256 pairs"
    evidence = body["evidence"]
    if not isinstance(evidence, dict) or not all(
        isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
        for rows in evidence.values()
    ):
        return "its evidence is not a list of rows per database"
    env_py = body.get("env_py", {})
    if not isinstance(env_py, dict) or not all(isinstance(v, str) for v in env_py.values()):
        return "its env_py is not an object of checksums"
    return None


# -- the checks of `migrate --plan`, each a refusal naming its cause ---------------------------


def envelope_refusals(
    plan: Plan,
    env: str,
    now: datetime,
    approver_keys: Mapping[str, Any],
    verify: Any,
    writer_keys: Mapping[str, Sequence[Any]] | None = None,
) -> list[str]:
    """Refusals that hold for the whole plan. `approver_keys`: key file -> public key, from
    `policy.plan_approvers`; `writer_keys`: environment -> its public keys, for the
    environments whose key may write the plan (the predecessor's, the environment's own),
    where they sign; `verify(envelope, keys)` is signing.verify."""
    refusals = []
    if plan.env != env:
        refusals.append(f"the plan is for {plan.env}, not {env}")
    if writer_keys and not any(verify(plan.envelope, list(k)).valid for k in writer_keys.values()):
        refusals.append(
            "the plan was altered after it was written: it bears no valid signature by the key "
            f"of {' or '.join(sorted(writer_keys))}, which `orchestrator plan --out` signs with"
        )
    expires = _parse_iso(plan.body["expires_at"])
    if expires is None:
        refusals.append("its expiry time is not a time")
    elif now >= expires:
        refusals.append(f"the plan expired at {plan.body['expires_at']}; make a new one")
    if approver_keys:
        approved = approvals(plan, approver_keys, verify)
        listed = set(_keyids(approver_keys))
        claimed = {s.get("keyid") for s in plan.envelope["signatures"] if isinstance(s, dict)}
        if not approved and claimed & listed:
            refusals.append(
                "the plan was altered after it was approved: the approval signature of "
                f"{', '.join(sorted(_names(approver_keys, claimed & listed)))} does not verify"
            )
        elif not approved:
            refusals.append(
                "the plan lacks a required approval: no signature by a key of "
                f"policy.plan_approvers ({', '.join(sorted(approver_keys))})"
            )
    return refusals


def approvals(plan: Plan, approver_keys: Mapping[str, Any], verify: Any) -> list[str]:
    """The approver key files whose signature over this very payload verifies."""
    good = []
    for name, key in approver_keys.items():
        if verify(plan.envelope, [key]).valid:
            good.append(name)
    return sorted(good)


def target_refusal(
    plan: Plan,
    target: str,
    heads: Sequence[str],
    checksums: Mapping[str, str],
    resumed: bool = False,
) -> str | None:
    """Why this database may not run the plan now, or None. A database already at the
    plan's target has nothing to do (re-applying a plan is a no-op); one that runs of this
    plan left at one of its steps (`resumed`) goes on with the steps after it."""
    planned = plan.heads(target)
    if planned is None:
        return f"the plan does not cover {target}"
    if list(heads) == [plan.to]:
        return None
    # `resumed`: runs of this very plan (stopped by SIGTERM) left the database at one of its
    # steps; going on from there runs the rest of the plan, nothing else
    resumed = resumed and bool(heads) and set(heads) <= set(plan.revisions)
    if sorted(heads) != sorted(planned) and not resumed:
        return (
            f"{target}'s heads moved since the plan: it was at {', '.join(planned) or 'base'}, "
            f"it is at {', '.join(heads) or 'base'} now"
        )
    changed = [s["revision"] for s in plan.steps if checksums.get(s["revision"]) != s["checksum"]]
    if changed:
        return (
            f"{', '.join(changed)} changed since the plan was made (the revision file's "
            "checksum differs from the plan's)"
        )
    return None


def read_refusals(plan: Plan, revisions: Sequence[str], files: Any) -> list[str]:
    """The files the plan's steps read on the predecessor (path -> sha256, from its
    evidence) that differ now; `files(path)` is the sha256 now (None: gone)."""
    changed = []
    for step in plan.steps:
        if step["revision"] not in revisions or not isinstance(step.get("reads"), dict):
            continue
        for path, digest in sorted(step["reads"].items()):
            if files(path) != digest:
                changed.append(f"{path} (read by {step['revision']})")
    if not changed:
        return []
    return [f"{', '.join(changed)} changed since the plan was made"]


def sql_refusals(plan: Plan, rendered: Mapping[str, str]) -> list[str]:
    """Steps whose SQL, rendered again now (`rendered`: revision -> SQL), is not the SQL
    the plan shows (its sha256)."""
    changed = [
        s["revision"]
        for s in plan.steps
        if s["revision"] in rendered
        and s.get("sql_sha256") is not None
        and sql_digest(rendered[s["revision"]]) != s["sql_sha256"]
    ]
    if not changed:
        return []
    return [
        f"the SQL of {', '.join(changed)} renders differently now than in the plan (its "
        "sha256 differs): what would run is not what was reviewed"
    ]


def _keyids(keys: Mapping[str, Any]) -> dict[str, str]:
    from orchestrator.core.signing import keyid

    return {keyid(key): name for name, key in keys.items()}


def _names(keys: Mapping[str, Any], ids: set[Any]) -> list[str]:
    by_id = _keyids(keys)
    return [by_id[i] for i in ids if i in by_id]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
