"""Readers that verify before they believe (SPEC Part 3): `plan ENV` on its own chain, a
release plan's evidence of the predecessor, `keys repair` without the key, and a file a
revision reads swapped while it runs. Real PostgreSQL, the deploy role's own connection,
staging and prod signing; every attack refused and nothing run."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from projectkit import HEAD, SHIPPED, Project, sign_env
from test_evidence_chain import entries, execute
from test_plans import apply, make_plan, resign, rewrite


def test_plan_names_a_break_in_the_planned_envs_own_chain_and_refuses(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    execute(signed, "staging", "DELETE FROM orchestrator_chain WHERE seq = 2")

    plan = signed.run("plan", "staging")
    assert plan.code == 3, plan.output
    assert "staging's evidence is broken at entry 2" in plan.stdout, plan.output
    assert "keys repair staging" in plan.stdout and "Traceback" not in plan.output
    shown = signed.run("plan", "staging", "--json")
    assert shown.code == 3 and shown.json()["blocker"] == "evidence", shown.output
    assert "entry 2" in shown.json()["evidence_chain"]
    # as the run would be: refused before it writes, nothing changed
    run = signed.run("migrate", "staging")
    assert run.code == 3 and "staging's evidence is broken at entry 2" in run.stderr
    assert signed.version("staging") == [SHIPPED[2]]
    # a release plan for it is refused too: it could never be applied
    out = signed.path / "staging-plan.json"
    written = signed.run("plan", "staging", "--out", str(out))
    assert written.code == 3 and "entry 2" in written.stderr, written.output
    assert not out.exists()
    # nothing to run: said, and no refusal (as `migrate` has nothing to refuse)
    at_target = signed.run("plan", "staging", "--to", SHIPPED[2])
    assert at_target.code == 0, at_target.output
    assert "staging's evidence is broken at entry 2" in at_target.stdout


def test_plan_of_an_env_that_does_not_sign_is_unaffected(pg_project: Project) -> None:
    sign_env(pg_project, "prod")  # prod signs; staging, the planned env, does not
    assert pg_project.run("migrate", "dev").code == 0
    plan = pg_project.run("plan", "staging", "--json")
    assert plan.code == 0, plan.output
    assert "evidence_chain" not in plan.json() and plan.json()["blocker"] is None


# -- a release plan believes the predecessor only as its chain proves it --------------------


def plan_body(plan: Path) -> dict[str, Any]:
    return json.loads(base64.b64decode(json.loads(plan.read_text())["payload"]))


def plan_then_roll_back(project: Project) -> tuple[Path, int]:
    """A plan for prod written while staging is at HEAD (by the staging job, with its key);
    then the deploy role rolls staging's evidence back: HEAD's entries and everything after
    them deleted, its ledger row too, alembic_version put back. Returns the plan and the
    staging head it witnessed."""
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging").code == 0
    plan = make_plan(project)
    head = plan_body(plan)["evidence_chain"]["staging"]["head"]
    assert head["env"] == "staging" and head["seq"] == len(entries(project, "staging"))
    shown = project.run("plan", "show", str(plan))
    assert f"-{head['seq']} (verified with its key when applied)" in shown.stdout, shown.output
    first = min(s for s, kind, c in entries(project, "staging") if c.get("revision") == HEAD)
    execute(
        project,
        "staging",
        f"DELETE FROM orchestrator_chain WHERE seq >= {first}",
        f"DELETE FROM orchestrator_ledger WHERE revision = '{HEAD}'",
        f"UPDATE alembic_version SET version_num = '{SHIPPED[-2]}'",
    )
    return plan, head["seq"]


def test_a_plan_applied_where_staging_can_be_read_names_its_rolled_back_chain(
    signed: Project,
) -> None:
    plan, seen = plan_then_roll_back(signed)
    sha = hashlib.sha256(base64.b64decode(json.loads(plan.read_text())["payload"])).hexdigest()
    done = signed.run("migrate", "prod", "--plan", str(plan), "--approve")
    assert done.code == 3, done.output
    assert (
        f"staging's evidence was rolled back below entry {seen}, which the plan {sha[:12]} saw"
        in done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr
    assert signed.version("prod") == []
    assert not [r for r, _ in signed.ledger("prod")]


def test_a_plan_applied_where_staging_cannot_be_read(signed: Project) -> None:
    """The job cannot tell staging was rolled back after the plan (SPEC: a signing
    predecessor's plan needs no access to it). It believes no more than the plan's chain
    segment proves: staging unreachable is no licence to skip the check (nothing runs); with
    staging's URL unset it runs exactly the plan, and prod's end entry witnesses the head
    the plan relied on, so the rollback below it is named by the next reader of staging."""
    plan, seen = plan_then_roll_back(signed)
    unreachable = signed.run(
        "migrate",
        "prod",
        "--plan",
        str(plan),
        "--approve",
        STAGING_DATABASE_URL="postgresql+psycopg://nobody:secret@127.0.0.1:9/nowhere",
    )
    assert unreachable.code == 1, unreachable.output
    assert "Cannot read staging" in unreachable.stderr and "secret" not in unreachable.output
    assert signed.version("prod") == []

    done = apply(signed, plan, "--json")
    assert done.code == 0, done.output
    assert signed.version("prod") == [HEAD]
    witnessed = done.json()[0]["evidence_head"]["witnessed"]
    assert [(w["env"], w["seq"]) for w in witnessed] == [("staging", seen)]
    assert entries(signed, "prod")[-1][2]["witnessed"][0]["seq"] == seen
    status = {r["env"]: r for r in signed.run("status", "--json").json()}
    assert status["prod"]["evidence_chain"].startswith("intact")


def test_a_plan_whose_chain_segment_was_cut_or_left_out_is_refused(signed: Project) -> None:
    """Even re-signed with a key that may write prod's plans (prod's own), the evidence is
    believed only as staging's key proves it."""
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging").code == 0
    plan = make_plan(signed)
    segment = plan_body(plan)["evidence_chain"]["staging"]["entries"]
    middle = segment[len(segment) // 2]["seq"]

    def cut(body: dict[str, Any]) -> None:
        rows = body["evidence_chain"]["staging"]["entries"]
        body["evidence_chain"]["staging"]["entries"] = [r for r in rows if r["seq"] != middle]

    rewrite(plan, cut)
    resign(signed, plan, "PROD_KEY")
    done = apply(signed, plan)
    assert done.code == 3, done.output
    assert f"the plan's evidence of staging/staging does not verify at entry {middle}" in (
        done.stderr
    ), done.stderr
    assert signed.version("prod") == []

    plan = make_plan(signed)
    rewrite(plan, lambda body: body.pop("evidence_chain"))  # as an earlier release wrote it
    resign(signed, plan, "STAGING_KEY")
    done = apply(signed, plan)
    assert done.code == 3, done.output
    assert "carries no verified evidence chain of staging/staging" in done.stderr
    assert signed.version("prod") == []


def test_no_plan_is_written_from_a_chain_rolled_back_below_what_prod_saw(
    signed: Project,
) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    assert signed.run("migrate", "prod", "--approve", "--to", SHIPPED[2]).code == 0
    seen = entries(signed, "prod")[-1][2]["witnessed"][0]["seq"]
    execute(signed, "staging", f"DELETE FROM orchestrator_chain WHERE seq >= {seen}")
    out = signed.path / "plan.json"
    written = signed.run("plan", "prod", "--out", str(out))
    assert written.code == 3, written.output
    assert f"staging's evidence was rolled back below entry {seen}, which prod saw" in (
        written.stderr
    ), written.stderr
    assert not out.exists()


# -- keys repair is the key holder's ----------------------------------------------------------


def test_keys_repair_without_the_envs_private_key_writes_nothing(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging").code == 0
    execute(signed, "staging", "DELETE FROM orchestrator_chain WHERE seq = 2")
    count = (
        "SELECT (SELECT count(*) FROM orchestrator_chain),"
        " (SELECT count(*) FROM orchestrator_audit)"
    )
    before = signed.query("staging", count)
    prod_key = signed.extra_env["PROD_KEY"]
    for key, said in (("", "STAGING_KEY is not set"), (prod_key, "it is not staging's key")):
        done = signed.run("keys", "repair", "staging", "--reason", "x", STAGING_KEY=key)
        assert done.code == 2, done.output
        assert said in done.stderr and "nothing was written" in done.stderr.lower(), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one paragraph
        assert "PRIVATE KEY" not in done.output and "Traceback" not in done.output
        assert signed.query("staging", count) == before
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "entry 2" in verify.output  # still named, not repaired


# -- a file a revision reads, swapped after the gate -------------------------------------------

READER = "0a0a0a0a0a0a"
# Reads its SQL from a file beside the revisions. SWAP (a test hook, as another process in
# the job could): rewrite that file just before reading it, and with SWAP=back put it back
# right after, before the revision's COMMIT.
SWAPPING_READER = """
import os
from pathlib import Path
sql = Path("alembic/sql/r3.sql")
online = not op.get_context().as_sql  # not while lint or a plan renders its SQL
reviewed = sql.read_bytes() if os.environ.get("SWAP") and online else None
if reviewed is not None:
    sql.write_text("CREATE TABLE r3_table (id integer PRIMARY KEY); CREATE TABLE swapped (n int);")
with open(sql) as text:
    op.execute(text.read())
if reviewed is not None and os.environ.get("SWAP") == "back":
    sql.write_bytes(reviewed)
"""


@pytest.mark.parametrize("swap", ["1", "back"])
def test_a_file_swapped_between_the_gate_and_the_commit_rolls_the_revision_back(
    pg_project: Project, swap: str
) -> None:
    project = pg_project
    for env in ("dev", "staging", "prod"):  # at HEAD: the reader is prod's only step
        assert project.run("migrate", env, "--approve").code == 0
    sql = project.path / "alembic" / "sql" / "r3.sql"
    sql.parent.mkdir(exist_ok=True)
    sql.write_text("CREATE TABLE r3_table (id integer PRIMARY KEY);\n")
    project.add_revision(READER, HEAD, SWAPPING_READER, 'op.execute("DROP TABLE r3_table")')
    for env in ("dev", "staging"):
        done = project.run("migrate", env)
        assert done.code == 0, done.output
    reviewed = sql.read_bytes()

    refused = project.run("migrate", "prod", "--approve", SWAP=swap)
    assert refused.code == 3, refused.output
    assert f"{READER} read alembic/sql/r3.sql while it ran" in refused.stderr, refused.stderr
    assert "rolled back" in refused.stderr and "Traceback" not in refused.stderr
    assert project.version("prod") == [HEAD]
    assert not {"r3_table", "swapped"} & set(project.schema("prod"))
    assert READER not in [r for r, _ in project.ledger("prod")]
    if swap == "back":
        assert sql.read_bytes() == reviewed
