"""The pure core of release plans: reading a plan file, and each refusal of `migrate --plan`,
with plain data and real Ed25519 keys (no files, no database)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core import signing
from orchestrator.evidence import plans

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def body(**changes: object) -> dict[str, object]:
    made = plans.build(
        env="prod",
        predecessor="staging",
        to="bbbb",
        targets=[{"name": "prod", "heads": ["aaaa"]}],
        steps=[{"revision": "bbbb", "checksum": "c" * 64, "direction": "up", "sql": "SELECT 1"}],
        evidence={"staging": []},
        lint=[],
        waivers=[],
        author="alice",
        git_sha="0" * 40,
        created=NOW,
        ttl=timedelta(hours=24),
    )
    made.update(changes)
    return made


def envelope(payload: dict[str, object], *keys: signing.PrivateKey) -> dict[str, object]:
    env: dict[str, object] = {
        "payloadType": plans.PLAN_TYPE,
        "payload": base64.b64encode(plans.canonical(payload)).decode(),
        "signatures": [],
    }
    for key in keys:
        env = signing.add_signature(env, key)
    return env


def key() -> signing.PrivateKey:
    return signing.load_private_key(signing.generate()[0])


def test_a_plan_expires_after_its_ttl() -> None:
    made = body()
    assert made["created_at"] == "2026-12-01T12:00:00Z"
    assert made["expires_at"] == "2026-12-02T12:00:00Z"
    plan = plans.read(json.dumps(envelope(made)))
    assert plans.envelope_refusals(plan, "prod", NOW, {}, signing.verify) == []
    later = NOW + timedelta(hours=24)
    assert "expired" in plans.envelope_refusals(plan, "prod", later, {}, signing.verify)[0]


def test_sha256_is_of_the_exact_payload_bytes() -> None:
    plan = plans.read(json.dumps(envelope(body())))
    import hashlib

    assert plan.sha256 == hashlib.sha256(plans.canonical(body())).hexdigest()


@pytest.mark.parametrize("ttl", ["", "0h", "5", "1y", "-1d", "h"])
def test_bad_ttl_is_refused(ttl: str) -> None:
    with pytest.raises(ValueError, match="--ttl"):
        plans.parse_ttl(ttl)


def test_ttl_units() -> None:
    assert plans.parse_ttl("30m") == timedelta(minutes=30)
    assert plans.parse_ttl("7d") == timedelta(days=7)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", plans.PlanFileError),
        ('{"payloadType": "x", "pay', plans.PlanFileError),
        ("[1]", plans.PlanFileError),
        ('{"payloadType": "application/json", "payload": ""}', plans.PlanFileError),
    ],
)
def test_what_is_not_a_plan_file(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        plans.read(text)


def test_a_payload_changed_into_garbage_is_tampering_not_a_usage_error() -> None:
    env = envelope(body())
    env["payload"] = base64.b64encode(b'{"format": 1, "env"').decode()
    with pytest.raises(plans.PlanTampered):
        plans.read(json.dumps(env))


def test_newer_format_is_a_file_error() -> None:
    with pytest.raises(plans.PlanFileError, match="format 2"):
        plans.read(json.dumps(envelope(body(format=2))))


def test_approval_by_a_listed_key_counts_and_any_change_breaks_it() -> None:
    manager, mallory = key(), key()
    approvers = {"keys/rm.pub": manager.public_key()}
    approved = envelope(body(), manager)
    plan = plans.read(json.dumps(approved))
    assert plans.envelope_refusals(plan, "prod", NOW, approvers, signing.verify) == []
    assert plans.approvals(plan, approvers, signing.verify) == ["keys/rm.pub"]

    changed = dict(approved, payload=base64.b64encode(plans.canonical(body(to="cccc"))).decode())
    refusals = plans.envelope_refusals(
        plans.read(json.dumps(changed)), "prod", NOW, approvers, signing.verify
    )
    assert len(refusals) == 1 and "altered after it was approved" in refusals[0]

    by_mallory = plans.read(json.dumps(envelope(body(), mallory)))
    refusals = plans.envelope_refusals(by_mallory, "prod", NOW, approvers, signing.verify)
    assert len(refusals) == 1 and "lacks a required approval" in refusals[0]

    unsigned = plans.read(json.dumps(envelope(body())))
    assert plans.envelope_refusals(unsigned, "prod", NOW, approvers, signing.verify)


def test_a_plan_for_another_environment() -> None:
    plan = plans.read(json.dumps(envelope(body())))
    assert plans.envelope_refusals(plan, "staging", NOW, {}, signing.verify) == [
        "the plan is for prod, not staging"
    ]


def test_target_refusals() -> None:
    plan = plans.read(json.dumps(envelope(body())))
    good = {"bbbb": "c" * 64}
    assert plans.target_refusal(plan, "prod", ["aaaa"], good) is None
    assert plans.target_refusal(plan, "prod", ["bbbb"], {}) is None  # done already: no-op
    moved = plans.target_refusal(plan, "prod", ["zzzz"], good)
    assert moved is not None and "heads moved" in moved and "zzzz" in moved
    edited = plans.target_refusal(plan, "prod", ["aaaa"], {"bbbb": "d" * 64})
    assert edited is not None and "bbbb changed since the plan" in edited
    other = plans.target_refusal(plan, "eu", ["aaaa"], good)
    assert other == "the plan does not cover eu"
