"""Audit trail core without a database (SPEC "Ledger and audit trail", "secrets"):
the hash chain, `--since/--until` parsing, secret redaction, the actor, event fields."""

from __future__ import annotations

import getpass
import json
import logging
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from orchestrator.commands.audit import parse_when
from orchestrator.core.errors import UsageError
from orchestrator.core.logging import redact_secrets
from orchestrator.core.secrets import redact, register_password
from orchestrator.evidence import ledger
from orchestrator.evidence.audit import AuditTrail, detect_actor

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

# -- the hash chain ------------------------------------------------------------------------


def _chain(n: int = 5) -> list[dict[str, Any]]:
    """Rows as `append_audit` writes them (the same pure `chain_rows`)."""
    records = []
    for i in range(1, n + 1):
        record = {
            "timestamp": f"2026-01-01T00:00:0{i}.000000Z",
            "event": "migration.applied" if i % 2 else "run.started",
            "run_id": f"run{i // 3}",
            "env": "prod",
            "actor": "alice",
            "revision": f"rev{i}" if i % 2 else None,
        }
        records.append({k: v for k, v in record.items() if v is not None})
    return ledger.chain_rows(records, 0, ledger.GENESIS)


def test_chain_rows_link_each_row_to_the_previous_one() -> None:
    rows = _chain(3)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == ledger.GENESIS
    assert [r["prev_hash"] for r in rows[1:]] == [r["hash"] for r in rows[:-1]]
    assert rows[1]["hash"] == ledger.chain_hash(rows[0]["hash"], 2, rows[1]["payload"])


def test_intact_chain_verifies() -> None:
    assert ledger.verify_chain(_chain()) is None
    assert ledger.verify_chain([]) is None


def test_altered_payload_names_that_row() -> None:
    rows = _chain()
    record = json.loads(rows[2]["payload"])
    record["actor"] = "mallory"
    rows[2]["payload"] = ledger.canonical(record)
    broken = ledger.verify_chain(rows)
    assert broken is not None
    assert (broken.id, broken.timestamp) == (3, rows[2]["timestamp"])
    assert broken.problem == "its content does not match its hash"


def test_altered_payload_field_without_a_column_is_caught_by_the_hash_alone() -> None:
    """`pid`, `checksum`, `error`...: only the hash protects what has no column of its own."""
    rows = _chain()
    record = json.loads(rows[2]["payload"])
    record["checksum"] = "forged"
    rows[2]["payload"] = ledger.canonical(record)
    broken = ledger.verify_chain(rows)
    assert broken is not None and broken.id == 3
    assert broken.problem == "its content does not match its hash"


@pytest.mark.parametrize(
    "column", ["actor", "event", "env", "run_id", "revision", "outcome", "timestamp"]
)
def test_altered_column_names_that_row(column: str) -> None:
    rows = _chain()
    rows[3][column] = "tampered"
    broken = ledger.verify_chain(rows)
    assert broken is not None and broken.id == 4
    assert column in broken.problem


def test_rehashed_row_breaks_the_link_of_the_next() -> None:
    rows = _chain()
    record = json.loads(rows[1]["payload"])
    record["actor"] = "mallory"
    rows[1]["payload"] = ledger.canonical(record)
    rows[1]["actor"] = "mallory"
    rows[1]["hash"] = ledger.chain_hash(rows[1]["prev_hash"], 2, rows[1]["payload"])
    broken = ledger.verify_chain(rows)
    assert broken is not None and broken.id == 3
    assert broken.problem == "its link to the previous row does not match"


def test_deleted_row_names_the_row_after_the_gap() -> None:
    rows = _chain()
    del rows[2]
    broken = ledger.verify_chain(rows)
    assert broken is not None
    assert (broken.id, broken.timestamp) == (4, rows[2]["timestamp"])


def test_deleted_first_row_is_noticed() -> None:
    rows = _chain()[1:]
    broken = ledger.verify_chain(rows)
    assert broken is not None and broken.id == 2


def test_reordered_rows_name_the_first_out_of_place() -> None:
    rows = _chain()
    rows[1], rows[2] = rows[2], rows[1]
    broken = ledger.verify_chain(rows)
    assert broken is not None and broken.id == 3


def test_swapped_ids_are_noticed() -> None:
    rows = _chain()
    rows[1]["id"], rows[2]["id"] = 3, 2
    rows[1], rows[2] = rows[2], rows[1]
    broken = ledger.verify_chain(rows)
    assert broken is not None and broken.id == 2


@pytest.mark.parametrize(
    "payload",
    [
        '{"a":1,"b":[1,2.5,null,true],"c":{"d":"\\u00e9"}}',  # as the trail writes it
        ' {"a": 1} ',  # whitespace around it: what json.loads accepts, accepted
        '{"a":"x\\"}"}',
    ],
)
def test_decode_payload_reads_what_json_reads(payload: str) -> None:
    assert ledger.decode_payload(payload) == json.loads(payload)


@pytest.mark.parametrize(
    "payload",
    ["", "not json", '{"a":1}{"b":2}', '{"a":1} x', "[1, 2]", '"text"', "1", "[" * 100_000, None],
)
def test_decode_payload_refuses_what_is_not_one_json_object(payload: Any) -> None:
    assert ledger.decode_payload(payload) is None


def test_a_rehashed_row_that_is_not_json_is_named() -> None:
    rows = _chain()
    rows[2]["payload"] = '{"event":"run.started"}{"event":"run.succeeded"}'
    rows[2]["hash"] = ledger.chain_hash(rows[2]["prev_hash"], 3, rows[2]["payload"])
    rows[3]["prev_hash"] = rows[2]["hash"]
    rows[3]["hash"] = ledger.chain_hash(rows[3]["prev_hash"], 4, rows[3]["payload"])
    broken, records = ledger.check_chain(rows)
    assert broken is not None and (broken.id, broken.problem) == (
        3,
        "its payload is not a JSON object",
    )
    assert records[2]["event"] == rows[2]["event"]  # what its columns say
    assert len(records) == len(rows)


# -- --since / --until ----------------------------------------------------------------------

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30m", "2026-03-10T11:30:00.000000Z"),
        ("12h", "2026-03-10T00:00:00.000000Z"),
        ("7d", "2026-03-03T12:00:00.000000Z"),
        ("2w", "2026-02-24T12:00:00.000000Z"),
        ("2026-01-05", "2026-01-05T00:00:00.000000Z"),
        ("2026-01-05T10:20:30", "2026-01-05T10:20:30.000000Z"),
        ("2026-01-05T10:20:30Z", "2026-01-05T10:20:30.000000Z"),
        ("2026-01-05T10:20:30+02:00", "2026-01-05T08:20:30.000000Z"),
    ],
)
def test_parse_when(value: str, expected: str) -> None:
    assert parse_when(value, NOW) == expected


def test_parse_when_none_and_default_now() -> None:
    assert parse_when(None) is None
    assert ISO_UTC.match(parse_when("1h") or "")


@pytest.mark.parametrize("value", ["yesterday", "7x", "d7", "", "2026-13-01", "-3d"])
def test_parse_when_rejects_bad_input(value: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_when(value, NOW)
    assert "30m" in info.value.message
    assert info.value.exit_code == 2


# -- secrets ----------------------------------------------------------------------------------


def test_redact_secrets_masks_url_passwords() -> None:
    event = {
        "event": "x",
        "error": "connection to postgresql+psycopg://bob:hunter2-url@db:5432/app failed",
        "nested": {"urls": ["postgresql://u:p4ss@h/d", ("mysql://a:b@c/d",)]},
        "count": 3,
    }
    out = redact_secrets(None, "info", event)
    flat = json.dumps(out)
    for secret in ("hunter2-url", "p4ss", ":b@"):
        assert secret not in flat
    assert "bob:***@db" in out["error"]
    assert out["count"] == 3


def test_redact_secrets_masks_registered_passwords_anywhere() -> None:
    register_password("Planted-Pw-777")
    out = redact_secrets(
        None,
        "error",
        {
            "event": "migration.failed",
            "error": 'invalid input syntax for type integer: "Planted-Pw-777"',
            "holder": {"application_name": "x Planted-Pw-777 y"},
        },
    )
    assert "Planted-Pw-777" not in json.dumps(out)
    assert redact("a Planted-Pw-777 b") == "a *** b"


def test_short_passwords_are_not_registered() -> None:
    register_password("ab")
    assert redact("about abc") == "about abc"


def test_the_configured_chain_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.core.logging import configure_logging

    register_password("Chain-Pw-4242")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("json")
    try:
        structlog.get_logger("t").error(
            "boom", error="postgresql://u:Chain-Pw-4242@h/d and Chain-Pw-4242 again"
        )
        logging.getLogger("alembic.x").info("foreign line with Chain-Pw-4242")
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = handlers, level
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert "Chain-Pw-4242" not in err
    assert [e["event"] for e in lines] == ["boom", "foreign line with ***"]


# -- actor ------------------------------------------------------------------------------------

CI = {"GITHUB_ACTOR": "gh-user", "GITLAB_USER_LOGIN": "gl-user", "BUILD_USER_ID": "jenkins-user"}


def test_actor_configured_wins() -> None:
    assert detect_actor("release-bot", CI) == "release-bot"


def test_actor_ci_variables_in_order() -> None:
    assert detect_actor(None, CI) == "gh-user"
    assert detect_actor(None, {k: v for k, v in CI.items() if k != "GITHUB_ACTOR"}) == "gl-user"
    assert detect_actor(None, {"BUILD_USER_ID": "jenkins-user"}) == "jenkins-user"
    assert detect_actor("", {"GITHUB_ACTOR": "", "GITLAB_USER_LOGIN": "gl"}) == "gl"


def test_actor_falls_back_to_user_at_host() -> None:
    assert detect_actor(None, {}) == f"{getpass.getuser()}@{socket.gethostname()}"


def test_actor_through_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from orchestrator.core.config import Settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRATOR_ACTOR", "from-env")
    assert detect_actor(Settings().actor, {"GITHUB_ACTOR": "gh"}) == "from-env"
    monkeypatch.delenv("ORCHESTRATOR_ACTOR")
    assert detect_actor(Settings().actor, {"GITHUB_ACTOR": "gh"}) == "gh"


# -- event fields -----------------------------------------------------------------------------


def test_events_carry_the_spec_fields(tmp_path: Path) -> None:
    file = tmp_path / "audit" / "events.jsonl"
    trail = AuditTrail(
        env="prod",
        run_id="abc123",
        actor="alice",
        engine=None,
        file=file,
        ticket="CHG-1",
        git_sha="deadbeef",
        reason=None,
    )
    with capture_logs() as logs:
        trail.emit("run.started", from_revision="a", to_revision="b")
        trail.emit("migration.applied", revision="b", checksum="c" * 64, duration_ms=12)
        trail.emit("migration.failed", outcome="failed", revision="b", error="bad")
    assert [e["event"] for e in logs] == ["run.started", "migration.applied", "migration.failed"]
    assert logs[2]["log_level"] == "error"
    for event in logs:
        assert ISO_UTC.match(event["timestamp"])
        assert datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).tzinfo
        assert (event["run_id"], event["env"], event["actor"]) == ("abc123", "prod", "alice")
        assert (event["ticket"], event["git_sha"]) == ("CHG-1", "deadbeef")
        assert "reason" not in event  # None fields are left out
    assert logs[1]["revision"] == "b" and logs[1]["duration_ms"] == 12
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert [{k: v for k, v in e.items() if k != "log_level"} for e in logs] == lines


def test_event_values_are_redacted_before_any_destination(tmp_path: Path) -> None:
    register_password("Emit-Pw-9001")
    file = tmp_path / "events.jsonl"
    trail = AuditTrail(env="dev", run_id="r", actor="a", engine=None, file=file)
    with capture_logs() as logs:
        trail.emit(
            "run.failed", outcome="failed", error="auth Emit-Pw-9001 at postgresql://x:y@h/d"
        )
    assert "Emit-Pw-9001" not in json.dumps(logs)
    assert "Emit-Pw-9001" not in file.read_text()
    assert "x:y@" not in file.read_text()


def test_check_chain_decodes_every_record_even_after_a_break() -> None:
    """What the audit report shows: each row's event as recorded, the broken one and those
    after it too; verify_chain stops at the break."""
    rows = _chain()
    record = json.loads(rows[2]["payload"])
    record["checksum"] = "forged"
    rows[2]["payload"] = ledger.canonical(record)
    broken, records = ledger.check_chain(rows, decode_all=True)
    assert broken is not None and broken.id == 3
    assert records == [json.loads(r["payload"]) for r in rows]
    assert records[2]["checksum"] == "forged"
    rows[3]["actor"] = "tampered"  # the first break found is a column: decoded all the same
    broken, records = ledger.check_chain(rows[3:], decode_all=True)
    assert broken is not None and broken.id == 4
    assert records == [json.loads(r["payload"]) for r in rows[3:]]
    broken, records = ledger.check_chain(rows, decode_all=False)
    assert broken is not None and records == [json.loads(r["payload"]) for r in rows[:2]]
    rows = _chain()
    rows[3]["revision"] = "injected"  # a column its event lacks: the event is shown as recorded
    broken, records = ledger.check_chain(rows, decode_all=True)
    assert broken is not None and (broken.id, broken.problem) == (
        4,
        "column revision differs from the hashed record",
    )
    assert records == [json.loads(r["payload"]) for r in rows] and "revision" not in records[3]
