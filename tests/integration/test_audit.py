"""The audit trail (SPEC "Ledger and audit trail", "Failure, bad input, secrets", `audit`),
through the CLI on real PostgreSQL databases."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pgcluster import PgCluster
from projectkit import HEAD, SHIPPED, URL_VARS, Project, Result, make_project

from orchestrator.db.locks import DEFAULT_KEY, lock_id
from orchestrator.evidence import ledger

BASE_FIELDS = ("timestamp", "event", "run_id", "env", "actor")
FAIL_REV = "f00dfa11beef"
OK_REV = "0c0ffee00001"


def events(project: Project, env: str) -> list[dict[str, Any]]:
    return project.audit_events(env)


def last_run(project: Project, env: str) -> list[dict[str, Any]]:
    all_events = events(project, env)
    run_id = [e for e in all_events if e["event"] == "run.started"][-1]["run_id"]
    return [e for e in all_events if e["run_id"] == run_id]


def checksum(project: Project, rev: str) -> str:
    path = next(project.versions.glob(f"{rev}_*.py"))
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def add_failing_revisions(project: Project, down: str = HEAD) -> None:
    """OK_REV creates a table; FAIL_REV then fails on a division by zero."""
    project.add_revision(
        OK_REV,
        down,
        'op.create_table("audit_ok", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("audit_ok")',
    )
    project.add_revision(FAIL_REV, OK_REV, 'op.execute("SELECT 1/0")')


# -- the events of a run -------------------------------------------------------------------


def test_successful_run_records_every_event_with_its_fields(
    pg_project: Project, tmp_path: Path
) -> None:
    audit_file = tmp_path / "audit.jsonl"
    result = pg_project.run(
        "migrate",
        "dev",
        "--ticket",
        "CHG-42",
        ORCHESTRATOR_AUDIT_FILE=str(audit_file),
        GIT_COMMIT="cafe1234",
    )
    assert result.code == 0, result.stderr

    run = events(pg_project, "dev")
    assert [e["event"] for e in run] == [
        "run.started",
        "lock.acquired",
        "gate.passed",
        *["migration.applied"] * len(SHIPPED),
        "run.succeeded",
        "lock.released",
    ]
    run_ids = {e["run_id"] for e in run}
    assert len(run_ids) == 1
    for e in run:
        assert all(e.get(k) for k in BASE_FIELDS), e
        assert e["timestamp"].endswith("Z") and "T" in e["timestamp"]
        assert (e["env"], e["actor"], e["ticket"], e["git_sha"]) == (
            "dev",
            "tester",
            "CHG-42",
            "cafe1234",
        )
    timestamps = [e["timestamp"] for e in run]
    assert timestamps == sorted(timestamps)
    assert run[0]["to_revision"] == HEAD
    applied = [e for e in run if e["event"] == "migration.applied"]
    assert [e["revision"] for e in applied] == SHIPPED
    for e in applied:
        assert e["checksum"] == checksum(pg_project, e["revision"])
        assert isinstance(e["duration_ms"], int) and e["duration_ms"] >= 0
    assert run[-2]["outcome"] == "succeeded"
    assert run[-2]["duration_ms"] >= max(e["duration_ms"] for e in applied)  # the whole run
    assert run[1]["lock_key"] == run[-1]["lock_key"] == DEFAULT_KEY

    # the ledger agrees, with the same run id
    rows = pg_project.query(
        "dev", "SELECT revision, checksum, run_id FROM orchestrator_ledger ORDER BY id"
    )
    assert rows == [(e["revision"], e["checksum"], run[0]["run_id"]) for e in applied]
    # mirrored to stderr (JSON lines off a terminal) and to the JSON-lines file
    logged = [e for e in json_lines(result.stderr) if e.get("run_id") in run_ids]
    assert [e["event"] for e in logged] == [e["event"] for e in run]
    assert json_lines(audit_file.read_text()) == run
    # indexed columns agree with the hashed record
    cols = pg_project.query(
        "dev", "SELECT event, revision, outcome FROM orchestrator_audit ORDER BY id"
    )
    assert cols == [(e["event"], e.get("revision"), e.get("outcome")) for e in run]


def test_failed_run_keeps_its_failure_record_after_the_rollback(
    pg_project: Project, tmp_path: Path
) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    add_failing_revisions(pg_project)
    audit_file = tmp_path / "audit.jsonl"

    result = pg_project.run("migrate", "dev", ORCHESTRATOR_AUDIT_FILE=str(audit_file))

    assert result.code == 1, result.output
    assert FAIL_REV in result.stderr and "division by zero" in result.stderr
    assert pg_project.version("dev") == [OK_REV]
    assert [r for r, _ in pg_project.ledger("dev")][-1] == OK_REV
    run = last_run(pg_project, "dev")
    assert [e["event"] for e in run] == [
        "run.started",
        "lock.acquired",
        "gate.passed",
        "migration.applied",
        "migration.failed",
        "run.failed",
        "lock.released",
    ]
    assert run[3]["revision"] == OK_REV
    failed, run_failed = run[4], run[5]
    assert (failed["revision"], failed["outcome"]) == (FAIL_REV, "failed")
    assert "division by zero" in failed["error"]
    assert (run_failed["revision"], run_failed["outcome"]) == (FAIL_REV, "failed")
    assert OK_REV in run_failed["error"]  # says what stays applied
    assert json_lines(audit_file.read_text()) == run


def test_gate_refusal_and_approval_refusal(pg_project: Project) -> None:
    refused = pg_project.run("migrate", "prod", "--approve")
    assert refused.code == 3
    run = last_run(pg_project, "prod")
    assert [e["event"] for e in run] == ["run.started", "gate.refused", "run.refused"]
    assert run[1]["outcome"] == run[2]["outcome"] == "refused"
    assert {b["revision"] for b in run[1]["blocked"]} == set(SHIPPED)
    assert "not run on staging" in run[2]["error"]
    assert pg_project.version("prod") == []

    for env in ("dev", "staging"):
        assert pg_project.run("migrate", env).code == 0
    unapproved = pg_project.run("migrate", "prod")
    assert unapproved.code == 3
    run = last_run(pg_project, "prod")
    assert [e["event"] for e in run] == ["run.started", "run.refused"]
    assert "approval" in run[1]["error"]
    assert pg_project.version("prod") == []


# -- append-only and the hash chain -------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE orchestrator_audit SET actor = 'mallory' WHERE id = 1",
        "DELETE FROM orchestrator_audit WHERE id = 1",
        "TRUNCATE orchestrator_audit",
    ],
)
def test_trigger_rejects_changes(pg_project: Project, statement: str) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    before = pg_project.query("dev", "SELECT * FROM orchestrator_audit ORDER BY id")
    engine = pg_project.engine("dev")
    try:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    assert pg_project.query("dev", "SELECT * FROM orchestrator_audit ORDER BY id") == before


def _tamper(project: Project, sql: str) -> None:
    engine = project.engine("dev")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE orchestrator_audit DISABLE TRIGGER USER"))
            conn.execute(sa.text(sql))
            conn.execute(sa.text("ALTER TABLE orchestrator_audit ENABLE TRIGGER USER"))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("sql", "row", "problem"),
    [
        (  # a field no column mirrors: only the content hash can tell
            "UPDATE orchestrator_audit SET payload = replace(payload, '{', '{\"note\":\"x\",') "
            "WHERE id = 4",
            4,
            "its content does not match its hash",
        ),
        (
            "UPDATE orchestrator_audit SET payload = replace(payload, '\"tester\"', '\"mallory\"') "
            "WHERE id = 4",
            4,
            "its content does not match its hash",
        ),
        (
            "UPDATE orchestrator_audit SET actor = 'mallory' WHERE id = 5",
            5,
            "column actor differs from the hashed record",
        ),
        (
            "DELETE FROM orchestrator_audit WHERE id = 3",
            4,
            "expected row 3 here (rows missing or inserted)",
        ),
    ],
    ids=["payload-field", "payload-actor", "actor-column", "deleted-row"],
)
def test_verify_names_the_first_broken_row(
    pg_project: Project, sql: str, row: int, problem: str
) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    intact = pg_project.run("audit", "verify", "--env", "dev")
    assert intact.code == 0, intact.output
    assert "intact" in intact.stdout

    _tamper(pg_project, sql)
    (stamp,) = pg_project.query(
        "dev", f"SELECT timestamp FROM orchestrator_audit WHERE id = {row}"
    )[0]

    broken = pg_project.run("audit", "verify", "--env", "dev")
    assert broken.code == 1, broken.output
    assert f"row {row}" in broken.stdout and stamp in broken.stdout
    as_json = pg_project.run("audit", "verify", "--json")
    assert as_json.code == 1
    by_env = {r["env"]: r for r in as_json.json()}
    assert by_env["dev"]["broken"]["id"] == row
    assert by_env["dev"]["broken"]["timestamp"] == stamp
    assert by_env["dev"]["broken"]["problem"] == problem
    assert by_env["staging"]["checked"] and by_env["staging"]["intact"]


def test_a_hand_written_row_is_named_and_stops_nothing_else(pg_project: Project) -> None:
    """The deploy role can append a row whose hash is right but whose payload is not an event
    (not JSON, or not an object). `audit verify` names it; no other command fails on it."""
    assert pg_project.run("migrate", "dev").code == 0
    status_before = pg_project.run("status").code
    ((last_id, last_hash),) = pg_project.query(
        "dev", "SELECT id, hash FROM orchestrator_audit ORDER BY id DESC LIMIT 1"
    )
    forged = []
    for row_id, payload in ((last_id + 1, "not json"), (last_id + 2, "[1, 2]")):
        digest = ledger.chain_hash(last_hash, row_id, payload)
        forged.append(
            f"({row_id}, '2026-12-01T00:00:00.000000Z', 'run.started', 'forged{row_id}', 'dev', "
            f"'mallory', '{payload}', '{last_hash}', '{digest}')"
        )
        last_hash = digest
    engine = pg_project.engine("dev")
    try:
        with engine.begin() as conn:  # appending is allowed: the table refuses only changes
            conn.execute(
                sa.text(
                    "INSERT INTO orchestrator_audit (id, timestamp, event, run_id, env, actor,"
                    " payload, prev_hash, hash) VALUES " + ", ".join(forged)
                )
            )
    finally:
        engine.dispose()

    verify = pg_project.run("audit", "verify", "--env", "dev")
    assert verify.code == 1, verify.output
    assert f"row {last_id + 1}" in verify.stdout
    assert "its payload is not a JSON object" in verify.stdout
    listed = pg_project.run("audit", "--env", "dev", "--run", f"forged{last_id + 2}", "--json")
    assert listed.code == 0, listed.output
    (event,) = json_lines(listed.stdout)
    assert (event["event"], event["actor"]) == ("run.started", "mallory")  # its columns
    report = pg_project.run("audit", "report", "--env", "dev", "--out", "report.html")
    assert report.code == 1, report.output  # written, and the broken chain said
    assert "BROKEN at row" in report.output
    for args in (("migrate", "dev"), ("status",)):
        result = pg_project.run(*args)
        assert "unexpected error" not in result.output, result.output
    assert pg_project.run("migrate", "dev").code == 0
    assert pg_project.run("status").code == status_before


# Two rows as this format writes them, hashes computed by hand (tests/unit/test_known_answers.py)
KNOWN_ROWS = [
    {
        "id": 1,
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "event": "run.started",
        "run_id": "r1",
        "env": "dev",
        "actor": "alice",
        "revision": None,
        "outcome": None,
        "payload": '{"actor":"alice","env":"dev","event":"run.started","run_id":"r1",'
        '"timestamp":"2026-01-01T00:00:00.000000Z"}',
        "prev_hash": "0" * 64,
        "hash": "928ad6734ae303c28161ef0d5be8b92146cec0112e5ba059983c27f56f8470b2",
    },
    {
        "id": 2,
        "timestamp": "2026-01-01T00:00:01.000000Z",
        "event": "run.succeeded",
        "run_id": "r1",
        "env": "dev",
        "actor": "alice",
        "revision": None,
        "outcome": "succeeded",
        "payload": '{"actor":"alice","env":"dev","event":"run.succeeded","outcome":"succeeded",'
        '"run_id":"r1","timestamp":"2026-01-01T00:00:01.000000Z"}',
        "prev_hash": "928ad6734ae303c28161ef0d5be8b92146cec0112e5ba059983c27f56f8470b2",
        "hash": "bda6fafdd58d9f5a326f61e0da55829676b1e7072e1c665fbc64625cec35f82c",
    },
]


def test_a_chain_written_earlier_verifies_and_runs_extend_it(pg_project: Project) -> None:
    """Rows with known hashes, as a database migrated earlier holds them: verified as they
    are, and continued by the next run. A change of the hash format fails here."""
    engine = pg_project.engine("dev")
    try:
        with engine.begin() as conn:
            ledger.ensure_tables(conn)
            conn.execute(sa.insert(ledger.audit), KNOWN_ROWS)
    finally:
        engine.dispose()
    verified = pg_project.run("audit", "verify", "--env", "dev", "--json")
    assert verified.code == 0, verified.output
    assert verified.json()[0]["rows"] == 2 and verified.json()[0]["intact"]

    assert pg_project.run("migrate", "dev").code == 0
    (prev,) = pg_project.query("dev", "SELECT prev_hash FROM orchestrator_audit WHERE id = 3")
    assert prev == (KNOWN_ROWS[1]["hash"],)
    again = pg_project.run("audit", "verify", "--env", "dev")
    assert again.code == 0, again.output


def test_chain_stays_intact_under_concurrent_runs(pg_project: Project) -> None:
    # someone else holds the migration lock while the 8 runs start: they all wait on it
    holder_engine = sa.create_engine(pg_project.urls["dev"])
    holder = holder_engine.connect()
    holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": lock_id(DEFAULT_KEY)})
    try:
        procs = [pg_project.popen("migrate", "dev", "--lock-timeout", "120") for _ in range(8)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            waiting = (
                pg_project.query(
                    "dev", "SELECT count(*) FROM orchestrator_audit WHERE event = 'lock.waiting'"
                )
                if "orchestrator_audit" in sa.inspect(holder).get_table_names()
                else [(0,)]
            )
            if waiting[0][0] >= 8 or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
    finally:
        holder.close()
        holder_engine.dispose()
    outs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in outs] == [0] * 8, [err for _, _, err in outs]

    assert pg_project.version("dev") == [HEAD]
    assert [r for r, _ in pg_project.ledger("dev")] == SHIPPED  # applied exactly once
    verify = pg_project.run("audit", "verify", "--env", "dev")
    assert verify.code == 0, verify.output
    engine = pg_project.engine("dev")
    try:
        with engine.connect() as conn:
            rows = ledger.read_chain(conn)
    finally:
        engine.dispose()
    assert ledger.verify_chain(rows) is None
    all_events = [json.loads(r["payload"]) for r in rows]
    started = [e["run_id"] for e in all_events if e["event"] == "run.started"]
    for run_id in started:  # every run that started ended exactly once
        ends = [
            e for e in all_events if e["run_id"] == run_id and e["event"] in ledger.TERMINAL_EVENTS
        ]
        assert [e["event"] for e in ends] == ["run.succeeded"], run_id
    assert len([e for e in all_events if e["event"] == "migration.applied"]) == len(SHIPPED)
    assert len([e for e in all_events if e["event"] == "lock.waiting"]) == 8


# -- review: filters, JSON lines, table -------------------------------------------------------


@pytest.fixture
def history(pg_project: Project) -> Project:
    """A varied history over dev, staging and prod, with several actors."""
    p = pg_project
    assert p.run("migrate", "dev", "--to", SHIPPED[1], ORCHESTRATOR_ACTOR="alice").code == 0
    assert p.run("migrate", "dev", "--ticket", "T-1", ORCHESTRATOR_ACTOR="bob").code == 0
    assert p.run("migrate", "staging", "--to", SHIPPED[2], ORCHESTRATOR_ACTOR="carol").code == 0
    assert p.run("migrate", "prod", "--approve", ORCHESTRATOR_ACTOR="dave").code == 3
    add_failing_revisions(p)
    assert p.run("migrate", "dev", ORCHESTRATOR_ACTOR="erin").code == 1
    return p


def audit_json(project: Project, *args: str, **env: str) -> list[dict[str, Any]]:
    result = project.run("audit", "--json", *args, **env)
    assert result.code == 0, result.output
    return json_lines(result.stdout)


def test_audit_filters_return_exactly_the_matching_rows(history: Project) -> None:
    everything = audit_json(history)
    assert len(everything) == sum(len(events(history, e)) for e in ("dev", "staging", "prod"))
    assert {e["env"] for e in everything} == {"dev", "staging", "prod"}
    stamps = [e["timestamp"] for e in everything]
    assert stamps == sorted(stamps)  # newest last
    middle = stamps[len(stamps) // 2]
    a_run = next(e["run_id"] for e in everything if e["actor"] == "carol")

    cases: list[tuple[list[str], Callable[[dict[str, Any]], bool]]] = [
        (["--env", "staging"], lambda e: e["env"] == "staging"),
        (["--actor", "bob"], lambda e: e["actor"] == "bob"),
        (["--event", "migration.applied"], lambda e: e["event"] == "migration.applied"),
        (["--revision", SHIPPED[1]], lambda e: e.get("revision") == SHIPPED[1]),
        (
            ["--revision", SHIPPED[2][:5]],
            lambda e: (e.get("revision") or "").startswith(SHIPPED[2][:5]),
        ),
        (["--outcome", "refused"], lambda e: e.get("outcome") == "refused"),
        (["--outcome", "failed"], lambda e: e.get("outcome") == "failed"),
        (["--outcome", "succeeded"], lambda e: e.get("outcome") == "succeeded"),
        (["--run", a_run], lambda e: e["run_id"] == a_run),
        (["--since", middle], lambda e: e["timestamp"] >= middle),
        (["--until", middle], lambda e: e["timestamp"] <= middle),
        (["--since", "1h"], lambda e: True),
        (["--until", "1h"], lambda e: False),
        (["--since", "2000-01-01", "--until", "2999-01-01"], lambda e: True),
        (
            ["--env", "dev", "--actor", "erin", "--event", "migration.failed"],
            lambda e: (
                e["env"] == "dev" and e["actor"] == "erin" and e["event"] == "migration.failed"
            ),
        ),
    ]
    for args, match in cases:
        expected = [e for e in everything if match(e)]
        assert audit_json(history, *args) == expected, args
    assert audit_json(history, "--outcome", "refused")  # the cases are not vacuous
    assert audit_json(history, "--revision", SHIPPED[1])

    assert audit_json(history, "--limit", "3") == everything[-3:]
    dev = [e for e in everything if e["env"] == "dev"]
    assert audit_json(history, "--env", "dev", "--limit", "4") == dev[-4:]
    bob = [e for e in everything if e["actor"] == "bob"]
    assert audit_json(history, "--actor", "bob", "--limit", "2") == bob[-2:]
    assert audit_json(history, "--limit", "0") == []


def test_audit_bad_filters_are_usage_errors(history: Project) -> None:
    for args in (
        ["--since", "yesterday"],
        ["--env", "nope"],
        ["--limit", "-1"],
        ["--outcome", "maybe"],
    ):
        result = history.run("audit", *args)
        assert result.code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_audit_table_is_aligned(history: Project) -> None:
    result = history.run("audit", "--env", "dev")
    assert result.code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "TIMESTAMP",
        "ENV",
        "EVENT",
        "OUTCOME",
        "REVISION",
        "ACTOR",
        "RUN",
        "DETAIL",
    ]
    assert len(rows) == len(events(history, "dev"))
    starts = {name: header.index(name) for name in header.split()}
    for row in rows:
        for name in ("ENV", "EVENT", "ACTOR", "RUN"):  # never-empty columns start in line
            col = starts[name]
            assert row[col - 2 : col] == "  " and row[col] != " ", (name, row)
        assert row[starts["ENV"] :].startswith("dev ")


def test_audit_reads_every_reachable_environment_and_names_the_others(history: Project) -> None:
    result = history.run("audit", "--json", STAGING_DATABASE_URL="")
    assert result.code == 0, result.output
    got = json_lines(result.stdout)
    assert {e["env"] for e in got} == {"dev", "prod"}
    assert "STAGING_DATABASE_URL" in result.stderr and "staging" in result.stderr
    for line in result.stderr.splitlines():  # off a terminal: JSON lines only
        json.loads(line)
    only = history.run("audit", "--env", "staging", STAGING_DATABASE_URL="")
    assert only.code == 2 and "STAGING_DATABASE_URL" in only.stderr
    verify = history.run("audit", "verify", STAGING_DATABASE_URL="")
    assert verify.code == 0, verify.output  # unconfigured is said, not a failure


def test_an_unreachable_database_is_never_a_clean_answer(history: Project) -> None:
    """Down (not unconfigured): `audit` says so, and fails when that env was asked for;
    `audit verify` cannot prove it intact, so it fails."""
    down = history.urls["dev"].replace(
        history.urls["dev"].split("@")[1].split("/")[0], f"127.0.0.1:{_free_port()}"
    )
    every = history.run("audit", "--json", DEV_DATABASE_URL=down)
    assert every.code == 0, every.output
    assert {e["env"] for e in json_lines(every.stdout)} == {"staging", "prod"}
    assert "Connection refused" in every.stderr
    for args in (
        ["audit", "--env", "dev"],
        ["audit", "--env", "dev", "--json"],
        ["audit", "verify"],
        ["audit", "verify", "--env", "dev"],
    ):
        result = history.run(*args, DEV_DATABASE_URL=down)
        assert result.code == 1, (args, result.output)
        assert "Connection refused" in result.output, args


# -- secrets ------------------------------------------------------------------------------------

PASSWORD = "s3cr3t-PLANT-xyz"
RAW_AT = "s3cr3t@PLANT-at-tail"  # a raw `@`: SQLAlchemy alone would take `PLANT...` for a host
SSL_PASSWORD = "ssl-PLANT-pass"
TOKEN = "tok-PLANT-en"
# every URL shape a secret comes in: the password, in the query string, with a raw `@`
URL_FORMS = {
    "userinfo": "postgresql+psycopg://{user}:{password}@127.0.0.1:{port}/{db}",
    "query": "postgresql+psycopg://{user}@127.0.0.1:{port}/{db}"
    "?sslmode=disable&password={password}&sslpassword=" + SSL_PASSWORD,
    "raw_at": "postgresql+psycopg://{user}:{password}@127.0.0.1:{port}/{db}",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_password_never_appears_anywhere(
    tmp_path: Path, pg_cluster: PgCluster, pg_url_factory: Callable[[], str], form: str
) -> None:
    password = RAW_AT if form == "raw_at" else PASSWORD
    secrets = [password, *password.split("@"), SSL_PASSWORD, TOKEN]
    user = f"planted_{form}"
    pg_cluster.create_role(user, password)
    dbs = {env: sa.engine.make_url(pg_url_factory()).database for env in ("dev", "staging", "prod")}

    def url(db: str | None, port: int | str = pg_cluster.port, extra: str = "") -> str:
        return URL_FORMS[form].format(user=user, password=password, port=port, db=db) + extra

    # the orchestrator gets the planted URLs; the test reads the databases as postgres
    project = make_project(tmp_path / "project", {e: pg_cluster.url(d) for e, d in dbs.items()})
    project.extra_env.update({URL_VARS[env]: url(db) for env, db in dbs.items()})
    audit_file = tmp_path / "audit.jsonl"
    project.extra_env["ORCHESTRATOR_AUDIT_FILE"] = str(audit_file)
    # the failing revision's database error quotes the password
    project.add_revision(
        FAIL_REV,
        HEAD,
        """op.execute("SELECT 1" if op.get_context().as_sql else "SELECT CAST('%s' AS integer)" """
        """% (op.get_bind().engine.url.password or op.get_bind().engine.url.query["password"]))""",
    )
    results: list[Result] = []

    def run(*args: str, code: int | None = None, **env: str) -> Result:
        result = project.run(*args, **env)
        results.append(result)
        if code is not None:
            assert result.code == code, (args, result.output)
        return result

    run("migrate", "dev", "--to", HEAD, code=0)
    assert project.version("dev") == [HEAD]  # the URL worked: the secret reached the driver
    failed = run("migrate", "dev", code=1)
    assert "***" in failed.stderr
    run("migrate", "prod", "--approve", "--to", HEAD, code=3)
    engine = sa.create_engine(
        pg_cluster.url(dbs["staging"]), connect_args={"application_name": "someone else"}
    )
    try:
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": lock_id(DEFAULT_KEY)})
            run("migrate", "staging", "--to", HEAD, "--lock-timeout", "0.5", code=4)
    finally:
        engine.dispose()
    # every command must do its job (a crash would "leak nothing"): each one's exit code
    for args, code in (
        (["status"], 0),
        (["status", "--json"], 0),
        (["plan", "dev"], 0),
        (["plan", "dev", "--sql"], 0),
        (["plan", "prod", "--json"], 3),  # staging has run nothing: prod would be refused
        (["audit"], 0),
        (["audit", "--json"], 0),
        (["audit", "verify"], 0),
        (["audit", "verify", "--json"], 0),
        (["current", "dev"], 0),
        (["envs"], 0),
        (["--log-format", "console", "status"], 0),
    ):
        run(*args, code=code)
    refused_port = url(dbs["dev"], port=_free_port())  # nothing listens there
    bad_port = url("x", port="notaport")
    # a query key the driver does not know: it sees the URL's query string, and refuses it
    bad_key = url(dbs["dev"], extra=f"&token={TOKEN}" if "?" in url("x") else f"?token={TOKEN}")
    # (command, exit code with the server down, with a URL that does not parse): each one
    # fails cleanly and says why, or reports the database it could not read and goes on
    for args, down, unparsable in (
        (["migrate", "dev"], 1, 2),
        (["status"], 1, 1),  # a health check: a set variable it cannot use fails it
        (["status", "dev", "--json"], 1, 1),
        (["plan", "dev"], 1, 2),
        (["audit"], 0, 0),
        (["audit", "--env", "dev"], 1, 2),
        (["audit", "verify"], 1, 0),
        (["current", "dev"], 1, 2),
        (["--log-format", "console", "migrate", "dev"], 1, 2),
    ):
        table = args == ["status"]  # the table's dev row says it in a word
        for bad_url, code, why in (
            (refused_port, down, "unreachable" if table else "Connection refused"),
            (bad_port, unparsable, "unreachable" if table else "its port is not a number"),
            (bad_key, down, "unreachable" if table else "invalid connection option"),
        ):
            result = run(*args, code=code, DEV_DATABASE_URL=bad_url)
            assert why in result.output, (args, result.output)
            assert "Traceback" not in result.output, (args, result.output)

    def leaked(text: str) -> list[str]:
        return [s for s in secrets if s in text]

    for result in results:
        assert not leaked(result.stdout + result.stderr), result.output
    assert audit_file.read_text() and not leaked(audit_file.read_text())
    for env in ("dev", "staging", "prod"):
        tables = [
            r[0]
            for r in project.query(
                env, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        assert {"orchestrator_audit", "orchestrator_ledger"} <= set(tables)
        for table in tables:
            rows = project.query(env, f"SELECT t::text FROM {table} t")
            assert not [r for r in rows if leaked(r[0])], (env, table)
    failure = [e for e in events(project, "dev") if e["event"] == "migration.failed"]
    assert failure and "***" in failure[0]["error"]


# -- a big history stays fast -----------------------------------------------------------------


def test_audit_table_indexes_what_is_filtered(pg_project: Project) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    defs = [
        d
        for (d,) in pg_project.query(
            "dev", "SELECT indexdef FROM pg_indexes WHERE tablename = 'orchestrator_audit'"
        )
    ]

    def leading(column: str) -> bool:
        return any(f"({column}" in d.replace('"', "") for d in defs)

    for column in ("id", "env", "timestamp", "actor", "event", "revision", "outcome", "run_id"):
        assert leading(column), (column, defs)
    assert any("(env, timestamp" in d.replace('"', "") for d in defs)  # --env E --since T


def test_audit_on_a_big_history_uses_the_indexes(pg_project: Project) -> None:
    """Not a timing: with many rows, each filter is answered by its index, not a scan."""
    assert pg_project.run("migrate", "dev").code == 0
    engine = pg_project.engine("dev")
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("""
                INSERT INTO orchestrator_audit
                  (id, timestamp, event, run_id, env, actor, revision, outcome, payload,
                   prev_hash, hash)
                SELECT id, ts, event, run_id, 'dev', actor, revision, NULL,
                       json_build_object('timestamp', ts, 'event', event, 'run_id', run_id,
                                         'env', 'dev', 'actor', actor, 'revision', revision)::text,
                       '', ''
                FROM (SELECT 1000 + g AS id, 'migration.applied' AS event,
                             'r' || (g / 10) AS run_id,
                             'actor' || (g % 500) AS actor, substr(md5(g::text), 1, 12) AS revision,
                             to_char(timestamp '2020-01-01' + g * interval '1 second',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts
                      FROM generate_series(1, 50000) g) rows""")
            )
            conn.execute(sa.text("ANALYZE orchestrator_audit"))
        flt = ledger.AuditFilter
        with engine.connect() as conn:
            for index, query in (
                ("actor", flt(actor="actor7")),
                ("event", flt(event="run.failed")),
                ("run_id", flt(run_id="r42")),
                ("revision", flt(revision=SHIPPED[1])),
                ("revision", flt(revision="c4ca4238a0")),
                ("outcome", flt(outcome="failed")),
                (
                    "timestamp",
                    flt(
                        env="dev",
                        since="2020-01-01T13:00:00.000000Z",
                        until="2020-01-01T13:01:00.000000Z",
                    ),
                ),
            ):
                compiled = ledger.audit_select(query).compile(dialect=conn.dialect)
                explained = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
                plan = "\n".join(r[0] for r in explained)
                assert "Seq Scan" not in plan and "ix_orchestrator_audit_" in plan, (query, plan)
                assert index in plan.split("ix_orchestrator_audit_", 1)[1], (query, plan)
    finally:
        engine.dispose()
    result = pg_project.run("audit", "--env", "dev", "--limit", "5", "--json")
    assert result.code == 0 and len(json_lines(result.stdout)) == 5


def append_forged(project: Project, env: str, events: list[dict[str, Any]]) -> None:
    """Append `events` as the deploy role could: each row's hash computed and chained, its
    indexed columns those of its payload, so the chain stays intact."""
    ((last_id, last_hash),) = project.query(
        env, "SELECT id, hash FROM orchestrator_audit ORDER BY id DESC LIMIT 1"
    )
    engine = project.engine(env)
    try:
        with engine.begin() as conn:
            for row_id, event in enumerate(events, start=last_id + 1):
                payload = ledger.canonical(event)
                digest = ledger.chain_hash(last_hash, row_id, payload)
                conn.execute(
                    ledger.audit.insert().values(
                        id=row_id,
                        payload=payload,
                        prev_hash=last_hash,
                        hash=digest,
                        **{
                            c: event.get(c)
                            for c in (
                                "timestamp",
                                "event",
                                "run_id",
                                "env",
                                "actor",
                                "revision",
                                "outcome",
                            )
                        },
                    )
                )
                last_hash = digest
    finally:
        engine.dispose()


@pytest.mark.parametrize("pid", ["x", 10**30, -1, True, [1]])
def test_a_hand_written_event_with_odd_fields_stops_nothing(
    sqlite_project: Project, pid: Any
) -> None:
    """A forged event whose chain is intact and whose payload is a JSON object can still give
    its fields any type: an open run's `pid` that is not a process id, a duration that is not
    a number, a holder that is not an object. No command fails on them."""
    project = sqlite_project
    ended = subprocess.Popen(["true"])
    ended.wait()  # a process id that is no longer alive: its run is dead
    assert project.run("migrate", "dev").code == 0
    base = {"env": "dev", "actor": "mallory", "timestamp": "2026-12-01T00:00:00.000000Z"}
    append_forged(
        project,
        "dev",
        [
            {
                **base,
                "event": "run.started",
                "run_id": "open1",
                "host": socket.gethostname(),
                "pid": pid,
            },
            {**base, "event": "run.started", "run_id": "ended1", "pid": pid, "host": 7},
            {  # dead: closed as interrupted on its own behalf, with what it claims to be
                **base,
                "event": "run.started",
                "run_id": "dead1",
                "host": socket.gethostname(),
                "pid": ended.pid,
                "target": 5,
                "command": ["x"],
                "from_revision": 3,
            },
            {**base, "event": "lock.waiting", "run_id": "ended1", "holder": "someone"},
            {**base, "event": "gate.refused", "run_id": "ended1", "blocked": 5, "approval": {}},
            {
                **base,
                "event": "migration.applied",
                "run_id": "ended1",
                "revision": HEAD,
                "duration_ms": "slow",
                "checksum": 5,
            },
            {
                **base,
                "event": "run.succeeded",
                "run_id": "ended1",
                "outcome": "succeeded",
                "duration_ms": "slow",
                "waivers": "all",
                "holder": [1],
                "to_revision": 3,
            },
        ],
    )
    assert project.run("audit", "verify", "--env", "dev").code == 0
    for args in (
        ("migrate", "dev"),
        ("status",),
        ("status", "--json"),
        ("audit", "--env", "dev"),
        ("audit", "--env", "dev", "--json"),
        ("audit", "report", "--env", "dev", "--out", "report.html"),
    ):
        result = project.run(*args)
        assert "unexpected error" not in result.output, (args, result.output)
        assert "Traceback" not in result.output, (args, result.output)
        assert result.code == 0, (args, result.output)
    ends = project.query("dev", "SELECT event FROM orchestrator_audit WHERE run_id = 'dead1'")
    assert [e for (e,) in ends] == ["run.started", "run.interrupted"]
