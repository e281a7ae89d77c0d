"""Evidence is a history (SPEC Part 3): the attacks of issue 30, as the deploy role on real
PostgreSQL (the test cluster's role owns our tables and may disable their triggers), with
staging and prod signing. Each one: prod refuses, or the writing command refuses (exit 3),
or `audit verify` exits 1 naming the entry; never "intact"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from projectkit import HEAD, SHIPPED, Project, sign_env


def execute(project: Project, env: str, *statements: str) -> None:
    """As the deploy role: its own connection, triggers off where it wants them off."""
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("SET session_replication_role = replica"))
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def entries(project: Project, env: str) -> list[tuple[int, str, dict]]:
    rows = project.query(env, "SELECT seq, kind, envelope FROM orchestrator_chain ORDER BY seq")
    out = []
    for seq, kind, envelope in rows:
        import base64

        payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
        out.append((seq, kind, payload["content"]))
    return out


def test_runs_write_a_gap_free_signed_chain_and_report_its_head(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    staged = signed.run("migrate", "staging", "--json")
    assert staged.code == 0, staged.output
    chain = entries(signed, "staging")
    assert [seq for seq, _, _ in chain] == list(range(1, len(chain) + 1))
    assert [c["revision"] for _, kind, c in chain if kind == "ledger"] == SHIPPED
    assert chain[-1][1] == "end" and chain[-1][2]["audit_id"] > 0
    result = staged.json()
    head = result[0]["evidence_head"]
    assert head["env"] == "staging" and head["seq"] == len(chain)
    assert head["database"].startswith("postgresql:")
    refused = signed.run("migrate", "prod", "--json")  # no --approve: refused, still a head
    assert refused.code == 3 and refused.json()[0]["evidence_head"]["seq"] == 1
    prod = signed.run("migrate", "prod", "--approve", "--json")
    assert prod.code == 0, prod.output
    witnessed = entries(signed, "prod")[-1][2]["witnessed"]
    assert witnessed and witnessed[0]["env"] == "staging" and witnessed[0]["seq"] == len(chain)


def _hidden_rollback(project: Project) -> None:
    """Staging rolls HEAD back (signed `down` row); the deploy role hides it: deletes the
    `down` row, replays the older signed `up` row (ledger and chain entry) in its place, and
    puts alembic_version back."""
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging").code == 0, "staging"
    down = project.run(
        "downgrade", "staging", "--to", "-1", "--reason", "bad", "--force", "--approve"
    )
    assert down.code == 0, down.output
    down_id = project.query(
        "staging",
        "SELECT id FROM orchestrator_ledger WHERE direction = 'down' ORDER BY id DESC LIMIT 1",
    )[0][0]
    chain = entries(project, "staging")
    up_seq = [s for s, _, c in chain if c.get("revision") == HEAD and c["direction"] == "up"][-1]
    down_seq = [s for s, _, c in chain if c.get("direction") == "down"][-1]
    execute(
        project,
        "staging",
        f"DELETE FROM orchestrator_ledger WHERE id = {down_id}",
        "INSERT INTO orchestrator_ledger (id, revision, checksum, direction, run_id, env, actor,"
        " at, envelope) SELECT "
        f"{down_id}, revision, checksum, direction, run_id, env, actor, at, envelope"
        f" FROM orchestrator_ledger WHERE revision = '{HEAD}' AND direction = 'up'",
        f"DELETE FROM orchestrator_chain WHERE seq = {down_seq}",
        "INSERT INTO orchestrator_chain (seq, kind, run_id, envelope) SELECT "
        f"{down_seq}, kind, run_id, envelope FROM orchestrator_chain WHERE seq = {up_seq}",
        f"UPDATE alembic_version SET version_num = '{HEAD}'",
    )


def test_a_hidden_staging_rollback_is_refused_by_prod(signed: Project) -> None:
    _hidden_rollback(signed)
    prod = signed.run("migrate", "prod", "--approve")
    assert prod.code == 3, prod.output
    assert "staging's evidence is broken at entry" in prod.stderr
    assert signed.version("prod") == []
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1, verify.output


def test_deleting_a_middle_entry_fails_verify_naming_it_and_stops_the_env(
    signed: Project,
) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging").code == 0
    execute(signed, "staging", "DELETE FROM orchestrator_chain WHERE seq = 2")
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1, verify.output
    assert "entry 2" in verify.output and "intact" not in verify.stdout
    again = signed.run("downgrade", "staging", "--to", "-1", "--reason", "x", "--force")
    assert again.code == 3, again.output
    assert "staging's evidence is broken at entry 2" in again.stderr
    assert signed.run("migrate", "prod", "--approve").code == 3


def forge_run(project: Project, env: str, run_id: str) -> None:
    """Correctly chained audit rows of a run that "succeeded", with no signed end entry."""
    from orchestrator.evidence import ledger

    last = project.query(env, "SELECT id, hash FROM orchestrator_audit ORDER BY id DESC LIMIT 1")
    records = [
        {
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "event": event,
            "run_id": run_id,
            "env": env,
            "actor": "ci",
            "outcome": "succeeded" if event == "run.succeeded" else None,
        }
        for event in ("run.started", "run.succeeded")
    ]
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            connection.execute(ledger.audit.insert(), ledger.chain_rows(records, *last[0]))
    finally:
        engine.dispose()


def test_forged_audit_rows_then_a_normal_run_refuses(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    forge_run(signed, "staging", "forged0000000001")
    run = signed.run("migrate", "staging")
    assert run.code == 3, run.output
    assert "forged0000000001" in run.stderr and "forged" in run.stderr
    assert signed.version("staging") == [SHIPPED[2]]
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "intact" not in verify.stdout, verify.output


def test_forged_rows_behind_a_session_named_like_a_run_are_judged_once_it_ends(
    signed: Project,
) -> None:
    """A session named `orchestrator run=<id>` makes forged rows look like a run going on:
    the next run leaves them open; once that session is gone they are forged after all."""
    import psycopg

    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    forge_run(signed, "staging", "forged0000000002")
    url = sa.engine.make_url(signed.urls["staging"]).set(drivername="postgresql")
    with psycopg.connect(
        url.render_as_string(hide_password=False),
        application_name="orchestrator run=forged0000000002 staging ci",
    ):
        going = signed.run("migrate", "staging", "--to", SHIPPED[3])
        assert going.code == 0, going.output
        assert "forged0000000002" in entries(signed, "staging")[-1][2]["open"]
    later = signed.run("migrate", "staging")
    assert later.code == 3, later.output
    assert "forged0000000002" in later.stderr
    assert signed.version("staging") == [SHIPPED[3]]


def test_a_killed_runs_rows_do_not_stop_the_next_run(signed: Project) -> None:
    import signal
    import time

    assert signed.run("migrate", "dev").code == 0
    signed.add_revision("f0000000slow", HEAD, "op.execute('SELECT pg_sleep(10)')")
    assert signed.run("migrate", "dev").code == 0
    proc = signed.popen("migrate", "staging")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            done = signed.query("staging", "SELECT count(*) FROM orchestrator_ledger")[0][0]
        except sa.exc.ProgrammingError:  # not created yet
            done = 0
        if done >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    again = signed.run("migrate", "staging")
    assert again.code == 0, again.output
    killed = [c for _, kind, c in entries(signed, "staging") if kind == "end" and "killed" in c]
    assert killed, entries(signed, "staging")


def test_a_dropped_chain_is_evidence_missing_never_intact(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging").code == 0
    execute(signed, "staging", "DROP TABLE orchestrator_chain")
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1, verify.output
    assert "evidence is missing" in verify.output and "intact" not in verify.stdout
    prod = signed.run("migrate", "prod", "--approve")
    assert prod.code == 3 and "evidence is missing" in prod.stderr, prod.output
    status = signed.run("status", "--json").json()
    by_env = {r["env"]: r for r in status}
    assert "evidence is missing" in by_env["staging"]["evidence_chain"]
    assert by_env["prod"]["evidence_chain"].startswith("intact up to entry")
    assert all("evidence is missing" in b["reason"] for b in by_env["prod"]["blocked"])
    text = signed.run("status")
    assert "staging/staging: staging's evidence is missing" in text.stdout, text.output


def test_an_empty_signing_database_is_nothing_recorded_yet(signed: Project) -> None:
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 0, verify.output


def test_a_rollback_below_a_witnessed_head_is_named(signed: Project, tmp_path: Path) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    assert signed.run("migrate", "prod", "--approve", "--to", SHIPPED[2]).code == 0
    seen = entries(signed, "prod")[-1][2]["witnessed"][0]["seq"]
    # staging's newest entries (the run's end) deleted, as a restore from a backup would
    execute(signed, "staging", f"DELETE FROM orchestrator_chain WHERE seq >= {seen}")
    assert signed.run("migrate", "staging").code == 3  # its own end entry is gone too
    prod = signed.run("migrate", "prod", "--approve")
    assert prod.code == 3, prod.output
    assert (
        f"staging's evidence was rolled back below entry {seen}, which prod saw" in (prod.stderr)
        or "staging's audit trail does not verify" in prod.stderr
    )


def test_prod_reads_staging_on_from_the_head_it_witnessed(signed: Project) -> None:
    """A run reads its predecessor's chain from the head its own signed end entry witnessed,
    with what the chain proved up to it (signed with the witness): a long history costs what
    its newest entries cost. Entries before that head are not read again: an edit there is
    for staging's own runs and `audit verify` to name, and changes nothing prod believes."""
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    assert signed.run("migrate", "prod", "--approve", "--to", SHIPPED[2]).code == 0
    (witness,) = entries(signed, "prod")[-1][2]["witnessed"]
    assert witness["snapshot"]["proven"][SHIPPED[2]][1] == "up"
    assert signed.run("migrate", "staging").code == 0
    ((first,),) = signed.query("staging", "SELECT envelope FROM orchestrator_chain WHERE seq = 1")
    execute(signed, "staging", "UPDATE orchestrator_chain SET envelope = 'x' WHERE seq = 1")
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "entry 1" in verify.output, verify.output
    prod = signed.run("migrate", "prod", "--approve", "--json")
    assert prod.code == 0, prod.output
    assert prod.json()[0]["applied"] == SHIPPED[3:]
    # a rolled back revision is still refused: the `down` entry is after the witnessed head
    execute(signed, "staging", f"UPDATE orchestrator_chain SET envelope = '{first}' WHERE seq = 1")
    assert signed.run("downgrade", "staging", "--to", SHIPPED[3], "--reason", "bad").code == 0
    assert (
        signed.run(
            "downgrade", "prod", "--to", SHIPPED[3], "--reason", "x", "--force", "--approve"
        ).code
        == 0
    )
    refused = signed.run("migrate", "prod", "--approve")
    assert refused.code == 3 and SHIPPED[4] in refused.stderr, refused.output


def test_baseline_after_the_deploy_role_deletes_ledger_rows_is_refused(
    signed: Project,
) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging").code == 0
    rev = SHIPPED[2]
    path = next(signed.versions.glob(f"{rev}_*.py"))
    path.write_text(path.read_text() + "\n# planted: prod would run this\n")
    execute(signed, "staging", f"DELETE FROM orchestrator_ledger WHERE revision = '{rev}'")
    laundered = signed.run("baseline", "staging", "--revision", HEAD, "--reason", "x")
    assert laundered.code == 3, laundered.output
    assert "staging's evidence is broken at entry" in laundered.stderr
    assert signed.run("migrate", "prod", "--approve").code == 3
    assert signed.version("prod") == []


def test_keys_adopt_refuses_a_forged_unsigned_row_in_a_signing_env(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    from orchestrator.migrations.runner import AlembicProject

    checksum = AlembicProject(signed.path / "alembic.ini").graph.get(SHIPPED[3]).checksum
    execute(
        signed,
        "staging",
        "INSERT INTO orchestrator_ledger (revision, checksum, direction, run_id, env, actor, at)"
        f" VALUES ('{SHIPPED[3]}', '{checksum}', 'up', 'forged', 'staging', 'ci', '2026')",
        f"UPDATE alembic_version SET version_num = '{SHIPPED[3]}'",
    )
    adopt = signed.run("keys", "adopt", "staging", "--reason", "sign it", "--approve")
    assert adopt.code == 3, adopt.output
    assert SHIPPED[3] in adopt.stderr and "written by hand" in adopt.stderr
    assert signed.run("migrate", "prod", "--approve", "--to", SHIPPED[3]).code == 3


def test_an_install_of_an_earlier_release_moves_to_the_chain_with_keys_adopt(
    pg_project: Project,
) -> None:
    sign_env(pg_project, "staging")
    assert pg_project.run("migrate", "dev").code == 0
    assert pg_project.run("migrate", "staging").code == 0
    # what Part 2 left: signed rows and checkpoints, no chain
    execute(pg_project, "staging", "DROP TABLE orchestrator_chain")
    refused = pg_project.run("migrate", "staging", "--to", HEAD)
    assert refused.code in (0, 3)  # already there: nothing to do, or refused as missing
    verify = pg_project.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "evidence is missing" in verify.stdout, verify.output
    moved = pg_project.run("keys", "adopt", "staging", "--reason", "move to the chain")
    assert moved.code == 0, moved.output
    kinds = [kind for _, kind, _ in entries(pg_project, "staging")]
    assert kinds[0] == "moved" and kinds.count("ledger") == len(SHIPPED), kinds
    assert pg_project.run("audit", "verify", "--env", "staging").code == 0
    assert pg_project.run("migrate", "prod", "--approve").code == 0


def test_keys_repair_is_the_one_way_on_and_the_broken_span_counts_as_not_run(
    signed: Project,
) -> None:
    _hidden_rollback(signed)
    assert signed.run("migrate", "staging").code == 3  # broken: its own writes refuse
    no_reason = signed.run("keys", "repair", "staging", "--reason", " ")
    assert no_reason.code == 2
    repaired = signed.run("keys", "repair", "staging", "--reason", "rollback hidden by hand")
    assert repaired.code == 0, repaired.output
    kinds = [kind for _, kind, _ in entries(signed, "staging")]
    assert "repair" in kinds
    events = [e for e in signed.audit_events("staging") if e["event"] == "evidence.repaired"]
    assert events and events[-1]["reason"] == "rollback hidden by hand"
    assert signed.run("audit", "verify", "--env", "staging").code == 0
    # HEAD's evidence (its `down`) lay in the broken span: not run on staging for prod
    prod = signed.run("migrate", "prod", "--approve")
    assert prod.code == 3, prod.output
    assert HEAD in prod.stderr and "not run on staging" in prod.stderr
    assert signed.run("migrate", "prod", "--approve", "--to", SHIPPED[-2]).code == 0
    # and staging's own runs go on from the repair
    assert signed.run("migrate", "staging").code == 0
    assert signed.run("audit", "verify", "--env", "staging").code == 0


def test_a_user_schema_or_database_search_path_hides_nothing(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging").code == 0
    user = signed.query("staging", "SELECT current_user")[0][0]
    database = signed.query("staging", "SELECT current_database()")[0][0]
    # empty look-alikes first in the path: a "$user" schema, and the database's default
    execute(
        signed,
        "staging",
        f'CREATE SCHEMA "{user}"',
        "CREATE SCHEMA shadow",
        *(
            f'CREATE TABLE "{user}".{t} (LIKE public.{t} INCLUDING ALL)'
            for t in ("orchestrator_chain", "orchestrator_ledger", "orchestrator_audit")
        ),
        f'ALTER DATABASE "{database}" SET search_path = shadow, "$user", public',
    )
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 0 and "entry" in verify.stdout, verify.output
    assert "(0 rows" not in verify.stdout
    assert signed.run("migrate", "prod", "--approve").code == 0
    # and dropping our tables and alembic_version is never "intact (0 rows)"
    execute(
        signed,
        "staging",
        *(
            f"DROP TABLE public.{t} CASCADE"
            for t in (
                "orchestrator_chain",
                "orchestrator_ledger",
                "orchestrator_audit",
                "orchestrator_checkpoint",
                "orchestrator_schema",
                "alembic_version",
            )
        ),
    )
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "intact" not in verify.stdout, verify.output
    assert "missing" in verify.output


def test_a_fence_whose_backend_pid_was_reused_does_not_hold(pg_db: str) -> None:
    """The same pid, another backend (started at another time): the fence must not hold."""
    import dataclasses
    from datetime import timedelta

    from orchestrator.db.database import make_engine
    from orchestrator.db.locks import migration_lock

    engine = make_engine(pg_db, "orchestrator test")
    try:
        with migration_lock(engine, "fence-test", 5, lambda _h: None, "test") as held:
            fence = held.fence
            assert fence is not None
            reused = dataclasses.replace(fence, started=fence.started - timedelta(seconds=1))
            with engine.connect() as connection:
                assert fence.held(connection)
                assert not reused.held(connection)
    finally:
        engine.dispose()


def test_sqlite_databases_chain_their_evidence_too(sqlite_project: Project) -> None:
    sign_env(sqlite_project, "staging")
    sign_env(sqlite_project, "prod")
    assert sqlite_project.run("migrate", "dev").code == 0
    assert sqlite_project.run("migrate", "staging").code == 0
    chain = entries(sqlite_project, "staging")
    assert [s for s, _, _ in chain] == list(range(1, len(chain) + 1)) and chain[-1][1] == "end"
    assert sqlite_project.run("audit", "verify", "--env", "staging").code == 0
    assert sqlite_project.run("migrate", "prod", "--approve").code == 0
    execute_sqlite = sqlite_project.engine("staging")
    try:
        with execute_sqlite.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER orchestrator_chain_no_delete")
            connection.exec_driver_sql("DELETE FROM orchestrator_chain WHERE seq = 2")
    finally:
        execute_sqlite.dispose()
    verify = sqlite_project.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "entry 2" in verify.stdout, verify.output


def test_the_newest_end_deleted_and_the_last_run_rewritten_stops_the_next_run(
    signed: Project,
) -> None:
    """Delete the newest end entry (and checkpoint), rewrite the last run's actor and
    re-hash: the next run must not sign over it."""
    from orchestrator.evidence import ledger

    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[1]).code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    last_end = max(s for s, kind, _ in entries(signed, "staging") if kind == "end")
    last_run = entries(signed, "staging")[-1][2]["run_id"]
    first = signed.query(
        "staging", f"SELECT min(id) FROM orchestrator_audit WHERE run_id = '{last_run}'"
    )[0][0]
    engine = signed.engine("staging")
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("SET session_replication_role = replica"))
            connection.execute(sa.text(f"DELETE FROM orchestrator_chain WHERE seq = {last_end}"))
            connection.execute(sa.text("DELETE FROM orchestrator_checkpoint"))
            rows = ledger.read_chain(connection)
            prev = rows[first - 2]["hash"]
            for row in rows[first - 1 :]:
                record = json.loads(row["payload"])
                if record["run_id"] == last_run:
                    record["actor"] = "someone-else"
                payload = ledger.canonical(record)
                digest = ledger.chain_hash(prev, row["id"], payload)
                connection.execute(
                    sa.text(
                        "UPDATE orchestrator_audit SET payload = :p, prev_hash = :prev,"
                        " hash = :h, actor = :a WHERE id = :id"
                    ),
                    {
                        "p": payload,
                        "prev": prev,
                        "h": digest,
                        "a": record["actor"],
                        "id": row["id"],
                    },
                )
                prev = digest
    finally:
        engine.dispose()
    run = signed.run("migrate", "staging")
    assert run.code == 3, run.output
    assert last_run in run.stderr
    assert signed.version("staging") == [SHIPPED[2]]
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "intact" not in verify.stdout, verify.output


def _slow_revision_running(project: Project) -> Any:
    """staging migrating in another process, inside a revision that sleeps 12 s, once the
    five shipped revisions (and their chain entries) committed."""
    import time

    assert project.run("migrate", "dev").code == 0
    project.add_revision("f0000000slow", HEAD, "op.execute('SELECT pg_sleep(12)')")
    assert project.run("migrate", "dev").code == 0
    holder = project.popen("migrate", "staging")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if project.query("staging", "SELECT count(*) FROM orchestrator_chain")[0][0] >= 5:
                break
        except sa.exc.ProgrammingError:
            pass
        time.sleep(0.2)
    return holder


def test_an_entry_forged_while_a_revision_runs_rolls_the_revision_back(signed: Project) -> None:
    """The deploy role puts an old entry at the place the slow revision's entry was sent for
    with its COMMIT: the run catches up on the newer entries, finds the forgery, and neither
    signs after it nor commits the revision."""
    holder = _slow_revision_running(signed)
    (count,) = signed.query("staging", "SELECT count(*) FROM orchestrator_chain")[0]
    execute(
        signed,
        "staging",
        "INSERT INTO orchestrator_chain (seq, kind, run_id, envelope)"
        f" SELECT {count + 1}, kind, run_id, envelope FROM orchestrator_chain WHERE seq = 1",
    )
    _, err = holder.communicate(timeout=120)
    assert holder.returncode == 1, err[-3000:]
    assert f"broken at entry {count + 1}" in err and "Traceback" not in err
    assert signed.version("staging") == [HEAD]
    assert "f0000000slow" not in [r for r, _ in signed.ledger("staging")]


def test_a_run_timing_out_on_the_lock_appends_its_end_beside_the_holder(
    signed: Project,
) -> None:
    """Two real processes: the holder writes entries while the other times out and signs its
    end; the chain stays gap-free and verifies."""
    holder = _slow_revision_running(signed)
    waiter = signed.run("migrate", "staging", "--lock-timeout", "1")
    assert waiter.code == 4, waiter.output
    assert holder.wait(timeout=120) == 0
    chain = entries(signed, "staging")
    assert [s for s, _, _ in chain] == list(range(1, len(chain) + 1))
    assert [kind for _, kind, _ in chain].count("end") == 2
    # the waiter's end took the place the slow revision's entry was sent for with its COMMIT:
    # the revision still committed, its entry appended after the waiter's end
    kinds = [(kind, content.get("revision")) for _, kind, content in chain]
    assert kinds.index(("ledger", "f0000000slow")) > kinds.index(("end", None))
    assert signed.query("staging", "SELECT version_num FROM alembic_version") == [("f0000000slow",)]
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 0, verify.output
    assert signed.run("migrate", "prod", "--approve").code == 0


def test_audit_rows_forged_while_a_run_runs_are_not_signed_over(signed: Project) -> None:
    """The deploy role appends correctly chained rows of a made-up run that "succeeded" while
    a signing run's revision runs: the run's end (its reads and its entry in one
    transaction) signs nothing over them and says why; prod refuses to promote from that
    trail, and `audit verify` fails."""
    holder = _slow_revision_running(signed)
    forge_run(signed, "staging", "forged0000000002")
    _, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err[-3000:]  # the revision itself was the run's
    assert "evidence.end_not_signed" in err and "forged0000000002" in err, err[-3000:]
    # staging's first run: no end entry at all, none signed over the forged rows
    assert [kind for _, kind, _ in entries(signed, "staging")].count("end") == 0
    run = signed.run("migrate", "prod", "--approve")
    assert run.code == 3, run.output
    # the first run it cannot prove: the holder's, whose end could not be signed
    assert "no signed end entry" in run.stderr and "audit trail does not verify" in run.stderr
    assert signed.version("prod") == []
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "intact" not in verify.stdout, verify.output
