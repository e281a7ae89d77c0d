"""The pure parts of "what runs is what was reviewed": files a revision read, env.py, the
writer's signature, resuming a plan, and plan files of the wrong shape."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from test_plans_core import NOW, body, envelope, key

from orchestrator.core import signing
from orchestrator.core.planning import (
    LedgerEntry,
    TargetState,
    env_py_difference,
    gate,
    reads_refusal,
)
from orchestrator.evidence import plans

SQL = "alembic/sql/r3.sql"


def staging_ran(reads: dict[str, str] | None) -> TargetState:
    entry = LedgerEntry(
        "r3", "c" * 64, "up", "run1", "now", reads=None if reads is None else json.dumps(reads)
    )
    return TargetState("staging", frozenset({"r3"}), {"r3": entry})


def test_the_gate_refuses_a_revision_whose_recorded_file_changed() -> None:
    state = staging_ran({SQL: "a" * 64})
    same = gate(["r3"], {"r3": "c" * 64}, "staging", [state], {SQL: "a" * 64}.get)
    assert not same[0].blocked
    (step,) = gate(["r3"], {"r3": "c" * 64}, "staging", [state], {SQL: "b" * 64}.get)
    assert step.blocked and f"reads {SQL}, which differs from what staging's run" in str(
        step.reason
    )
    gone = gate(["r3"], {"r3": "c" * 64}, "staging", [state], {}.get)
    assert gone[0].blocked
    # a row of an earlier release records no reads: nothing to compare
    assert not gate(["r3"], {"r3": "c" * 64}, "staging", [staging_ran(None)], {}.get)[0].blocked


def test_a_run_refuses_other_content_and_unread_data_files_not_modules() -> None:
    expected = [{SQL: "a" * 64}]
    assert reads_refusal("r3", "staging", expected, {SQL: "a" * 64}) is None
    assert "differs from what staging's run" in str(
        reads_refusal("r3", "staging", expected, {SQL: "b" * 64})
    )
    assert "did not read" in str(reads_refusal("r3", "staging", expected, {"data.csv": "d"}))
    # a module's import opens it only the first time in a process: no refusal
    assert reads_refusal("r3", "staging", expected, {"app/helpers.py": "e"}) is None


def test_env_py_differs_is_said_naming_the_databases() -> None:
    states = [TargetState("s1", frozenset(), env_py="a" * 64), TargetState("s2", frozenset())]
    assert env_py_difference("staging", "a" * 64, states) is None
    note = env_py_difference("staging", "b" * 64, states)
    assert note is not None and "staging (s1)'s last run" in note
    assert env_py_difference("staging", None, states) is None
    assert env_py_difference(None, "b" * 64, states) is None


def test_a_plan_needs_its_writers_signature_where_the_writer_signs() -> None:
    writer, other = key(), key()
    writers = {"staging": [writer.public_key()]}
    signed = plans.read(json.dumps(envelope(body(), writer)))
    assert plans.envelope_refusals(signed, "prod", NOW, {}, signing.verify, writers) == []
    for plan in (envelope(body()), envelope(body(), other)):
        refusals = plans.envelope_refusals(
            plans.read(json.dumps(plan)), "prod", NOW, {}, signing.verify, writers
        )
        assert "altered after it was written" in refusals[0]


def test_a_stopped_plan_resumes_only_from_its_own_steps() -> None:
    made = body(
        steps=[
            {"revision": "bbbb", "checksum": "b", "direction": "up"},
            {"revision": "cccc", "checksum": "c", "direction": "up"},
        ],
        to="cccc",
    )
    plan = plans.read(json.dumps(envelope(made)))
    sums = {"bbbb": "b", "cccc": "c"}
    assert plans.target_refusal(plan, "prod", ["bbbb"], sums, resumed=True) is None
    assert "heads moved" in str(plans.target_refusal(plan, "prod", ["bbbb"], sums))
    assert "heads moved" in str(plans.target_refusal(plan, "prod", ["zzzz"], sums, resumed=True))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"targets": "prod"}, "its targets are not a list"),
        ({"targets": [{"name": "prod"}]}, "has no list of heads"),
        ({"steps": [{"revision": "bbbb"}]}, "its step #1 has no checksum"),
        ({"steps": [{"revision": "bbbb", "checksum": "c", "reads": []}]}, "reads that are not"),
        ({"evidence": {"staging": "rows"}}, "its evidence is not a list of rows"),
        ({"to": 5}, "its to is not a string"),
    ],
)
def test_a_plan_of_the_wrong_shape_is_no_plan(change: dict[str, object], message: str) -> None:
    with pytest.raises(plans.PlanFileError, match=message):
        plans.read(json.dumps(envelope(body(**change))))


@pytest.mark.parametrize("ttl", ["99999999999d", "3654d", "0s", "1x", ""])
def test_ttls_out_of_range_are_refused(ttl: str) -> None:
    with pytest.raises(ValueError, match="--ttl"):
        plans.parse_ttl(ttl)


def test_ttls_take_seconds() -> None:
    assert plans.parse_ttl("1s") == timedelta(seconds=1)
    assert plans.parse_ttl("3653d") == plans.MAX_TTL


def test_sql_rendered_otherwise_is_refused() -> None:
    plan = plans.read(
        json.dumps(
            envelope(
                body(
                    steps=[
                        {
                            "revision": "bbbb",
                            "checksum": "c",
                            "sql_sha256": plans.sql_digest("SELECT 1"),
                        }
                    ]
                )
            )
        )
    )
    assert plans.sql_refusals(plan, {"bbbb": "SELECT 1"}) == []
    assert "renders differently" in plans.sql_refusals(plan, {"bbbb": "DROP TABLE x"})[0]
