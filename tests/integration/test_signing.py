"""Evidence the deploy role cannot forge (SPEC Part 2): signed ledger rows and audit
checkpoints, attacked as the application role would, on real PostgreSQL through the CLI.

Each attack runs twice where it matters: on staging/prod with `signing:` (prod refuses or
`audit verify` fails) and without (today's documented limit: the attack works)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from projectkit import HEAD, SHIPPED, Project, sign_env

from orchestrator.core import signing, trust
from orchestrator.evidence import ledger


def public_key(project: Project, name: str) -> signing.PublicKey:
    return signing.load_public_key((project.path / "keys" / f"{name}.pub").read_bytes())


def execute(project: Project, env: str, *statements: str) -> None:
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def edit_revision(project: Project, rev: str) -> Path:
    """The attacker's edit of an applied revision (the planted code)."""
    path = next(project.versions.glob(f"{rev}_*.py"))
    path.write_text(path.read_text() + "\n# planted: prod would run this\n")
    return path


def checksum_now(project: Project, rev: str) -> str:
    """The checksum the orchestrator computes for `rev` now (whatever it covers)."""
    from orchestrator.migrations.runner import AlembicProject

    return AlembicProject(project.path / "alembic.ini").graph.get(rev).checksum


def ran_to_staging(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    staged = project.run("migrate", "staging")
    assert staged.code == 0, staged.output


# -- keys ----------------------------------------------------------------------------------


def test_keys_generate_writes_a_pair_and_never_overwrites(pg_project: Project) -> None:
    private = pg_project.path / "ci" / "staging.key"
    made = pg_project.run(
        "keys", "generate", "staging", "--private-key-out", str(private), "--json"
    )
    assert made.code == 0, made.output
    info = made.json()
    pub = pg_project.path / "keys" / "staging.pub"
    assert info["public_key"] == "keys/staging.pub" and info["private_key"] is None
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    key = signing.load_private_key(private.read_bytes())
    assert signing.same_key(key, signing.load_public_key(pub.read_bytes()))
    assert info["keyid"] == signing.keyid(key.public_key())
    assert "PRIVATE" not in made.output  # the file holds it, no output does

    before = (pub.read_bytes(), private.read_bytes())
    again = pg_project.run("keys", "generate", "staging", "--private-key-out", str(private))
    assert again.code == 2 and "--force" in again.stderr and "staging.pub" in again.stderr
    assert (pub.read_bytes(), private.read_bytes()) == before
    forced = pg_project.run(
        "keys", "generate", "staging", "--private-key-out", str(private), "--force"
    )
    assert forced.code == 0, forced.output
    assert pub.read_bytes() != before[0] and private.read_bytes() != before[1]
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_keys_generate_prints_the_private_key_once_without_a_file(pg_project: Project) -> None:
    made = pg_project.run("keys", "generate", "prod", "--out-dir", "trust")
    assert made.code == 0, made.output
    key = signing.load_private_key(made.stdout.encode())
    pub = signing.load_public_key((pg_project.path / "trust" / "prod.pub").read_bytes())
    assert signing.same_key(key, pub)
    assert list((pg_project.path / "trust").iterdir()) == [pg_project.path / "trust" / "prod.pub"]
    assert pg_project.run("keys", "generate", "prod", "--out-dir", "trust").code == 2
    assert pg_project.run("keys", "generate", "../x").code == 2


# -- fail closed -----------------------------------------------------------------------------


def _untouched(project: Project, env: str) -> bool:
    return project.query(env, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        (0,)
    ]


def test_missing_wrong_or_bad_key_exits_2_before_anything_is_written(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    other = signed.path / "secrets" / "prod.key"
    cases = {
        "": "STAGING_KEY is not set",
        str(other): "does not match its public key",
        str(signed.path / "nowhere.key"): "cannot be read",
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFs\n-----END PRIVATE KEY-----\n": (
            "not an unencrypted PEM private key"
        ),
        str(signed.path / "keys" / "staging.pub"): "not an unencrypted PEM private key",
    }
    for value, message in cases.items():
        for command in (
            ["migrate", "staging"],
            ["baseline", "staging", "--revision", HEAD, "--reason", "x"],
            ["accept", "staging", "--revision", HEAD, "--reason", "x"],
            ["keys", "adopt", "staging", "--reason", "x"],
        ):
            done = signed.run(*command, STAGING_KEY=value)
            assert done.code == 2, (command, value, done.output)
            assert "STAGING_KEY" in done.stderr and message in done.stderr, done.stderr
            assert "c2VjcmV0" not in done.output and "Traceback" not in done.output
        assert _untouched(signed, "staging")
    # and a rollout checks every key before it migrates anything
    rolled = signed.run("rollout", "--through", "prod", "--approve", PROD_KEY="")
    assert rolled.code == 2 and "PROD_KEY" in rolled.stderr
    assert _untouched(signed, "staging") and _untouched(signed, "prod")


def test_a_missing_public_key_file_is_a_configuration_error(signed: Project) -> None:
    ran_to_staging(signed)
    (signed.path / "keys" / "staging.pub").unlink()
    done = signed.run("migrate", "prod", "--approve")
    assert done.code == 2 and "keys/staging.pub" in done.stderr, done.output


# -- what is signed ----------------------------------------------------------------------------


def test_ledger_rows_and_checkpoints_are_signed_and_results_carry_the_audit_head(
    signed: Project,
) -> None:
    assert signed.run("migrate", "dev").code == 0
    done = signed.run("migrate", "staging", "--json")
    assert done.code == 0, done.output
    head = done.json()[0]["audit_head"]
    keys = [public_key(signed, "staging")]
    rows = signed.query(
        "staging",
        "SELECT id, revision, checksum, direction, run_id, env, actor, at, envelope "
        "FROM orchestrator_ledger ORDER BY id",
    )
    assert [r[1] for r in rows] == SHIPPED
    for r in rows:
        row = dict(zip(("id", *trust.LEDGER_FIELDS, "envelope"), r, strict=True))
        assert trust.ledger_row_problem(row, keys, "staging", "staging") is None
        payload = json.loads(signing.verify(row["envelope"], keys).payload or b"")
        assert payload["checksum"] == row["checksum"] and payload["target"] == "staging"
    (last_id, last_hash), *_ = signed.query(
        "staging", "SELECT id, hash FROM orchestrator_audit ORDER BY id DESC LIMIT 1"
    )
    assert head == last_hash
    checkpoints = signed.query(
        "staging", "SELECT audit_id, audit_hash FROM orchestrator_checkpoint"
    )
    assert checkpoints == [(last_id, last_hash)]
    verify = signed.run("audit", "verify", "--env", "staging", "--anchor", head)
    assert verify.code == 0 and "signed: 1 checkpoint(s) verified" in verify.stdout, verify.output
    # dev does not sign: its rows carry no envelope, its checkpoints table stays empty
    assert signed.query(
        "dev", "SELECT count(*) FROM orchestrator_ledger WHERE envelope IS NULL"
    ) == [(len(SHIPPED),)]
    assert signed.query("dev", "SELECT count(*) FROM orchestrator_checkpoint") == [(0,)]


def test_a_refused_run_also_ends_with_a_checkpoint_and_an_audit_head(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    refused = signed.run("migrate", "prod", "--approve", "--json")
    assert refused.code == 3
    head = refused.json()[-1]["audit_head"]
    assert signed.query("prod", "SELECT hash FROM orchestrator_audit ORDER BY id DESC LIMIT 1") == [
        (head,)
    ]
    verify = signed.run("audit", "verify", "--env", "prod", "--anchor", head)
    assert verify.code == 0, verify.output


# -- attack 1: UPDATE the predecessor's ledger, then promote ----------------------------------


def _forge_staging_checksum(project: Project, rev: str) -> None:
    """As the application role: make staging's ledger vouch for an edited file."""
    edit_revision(project, rev)
    assert rev in project.run("status", "staging", "--json").json()[0]["drift"]
    execute(
        project,
        "staging",
        f"UPDATE orchestrator_ledger SET checksum = '{checksum_now(project, rev)}' "
        f"WHERE revision = '{rev}'",
    )
    assert project.run("status", "staging", "--json").json()[0]["drift"] == []


def test_forged_checksum_on_signed_staging_is_refused_by_prod(signed: Project) -> None:
    ran_to_staging(signed)
    rev = SHIPPED[-1]
    _forge_staging_checksum(signed, rev)
    before = (signed.schema("prod"), signed.version("prod"))

    refused = signed.run("promote", "prod", "--approve")

    assert refused.code == 3, refused.output
    assert f"{rev}: not signed by staging's key" in refused.stderr
    assert "its checksum differs from what was signed" in refused.stderr
    assert (signed.schema("prod"), signed.version("prod")) == before
    plan = signed.run("plan", "prod", "--json")
    assert plan.code == 3
    step = next(s for s in plan.json()["steps"] if s["revision"] == rev)
    assert step["verdict"] == "blocked" and "not signed by staging's key" in step["reason"]
    assert plan.json()["predecessor_evidence"] == "signed"


def test_a_forged_row_with_a_copied_envelope_is_refused(signed: Project) -> None:
    ran_to_staging(signed)
    rev = SHIPPED[-1]
    edit_revision(signed, rev)
    new = checksum_now(signed, rev)
    # a brand-new row for the edited file, carrying another row's genuine signature
    execute(
        signed,
        "staging",
        "INSERT INTO orchestrator_ledger (revision, checksum, direction, run_id, env, actor, at, "
        f"envelope) SELECT revision, '{new}', direction, run_id, env, actor, at, envelope "
        f"FROM orchestrator_ledger WHERE revision = '{rev}'",
    )
    refused = signed.run("promote", "prod", "--approve")
    assert refused.code == 3 and "not signed by staging's key" in refused.stderr
    assert signed.version("prod") == []


def test_without_signing_the_forged_checksum_gets_the_edit_into_prod(pg_project: Project) -> None:
    """The documented limit (README, Trust model): unsigned evidence is forgeable."""
    ran_to_staging(pg_project)
    rev = SHIPPED[-1]
    _forge_staging_checksum(pg_project, rev)
    plan = pg_project.run("plan", "prod")
    assert "staging's ledger is unsigned" in plan.stdout
    assert pg_project.run("plan", "prod", "--json").json()["predecessor_evidence"] == "unsigned"
    status = pg_project.run("status")
    assert "evidence unsigned (no `signing:`): dev, staging, prod" in status.stdout
    assert pg_project.run("promote", "prod", "--approve").code == 0
    assert pg_project.version("prod") == [HEAD]  # ran the planted file


# -- attack 2: edit the audit trail and re-hash it ---------------------------------------------


def _rehash_from(project: Project, env: str, row_id: int, **changes: str) -> None:
    """As the table's owner: triggers off, edit one row, recompute every later hash."""
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE orchestrator_audit DISABLE TRIGGER USER"))
            rows = ledger.read_chain(connection)
            prev = rows[row_id - 2]["hash"] if row_id > 1 else ledger.GENESIS
            for row in rows[row_id - 1 :]:
                record = json.loads(row["payload"])
                if row["id"] == row_id:
                    record.update(changes)
                payload = ledger.canonical(record)
                digest = ledger.chain_hash(prev, row["id"], payload)
                connection.execute(
                    sa.text(
                        "UPDATE orchestrator_audit SET payload = :p, prev_hash = :prev, hash = :h,"
                        " actor = :a WHERE id = :id"
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
            connection.execute(sa.text("ALTER TABLE orchestrator_audit ENABLE TRIGGER USER"))
    finally:
        engine.dispose()


def _two_runs(project: Project) -> None:
    ran_to_staging(project)
    project.add_revision("f00000000001", HEAD, "op.execute('SELECT 1')")
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging").code == 0, "second run"


def test_edit_and_rehash_fails_verify_on_a_signing_env(signed: Project) -> None:
    _two_runs(signed)
    _rehash_from(signed, "staging", 10, actor="mallory", ticket="CHG-0")
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1, verify.output
    assert "BROKEN at checkpoint 1" in verify.stdout and "edited and re-hashed" in verify.stdout
    as_json = signed.run("audit", "verify", "--env", "staging", "--json").json()[0]
    assert as_json["broken"]["kind"] == "checkpoint" and as_json["broken"]["id"] == 1


def test_edit_and_rehash_goes_unnoticed_without_signing(pg_project: Project) -> None:
    _two_runs(pg_project)
    _rehash_from(pg_project, "staging", 10, actor="mallory")
    verify = pg_project.run("audit", "verify", "--env", "staging")
    assert verify.code == 0 and "hash chain only" in verify.stdout, verify.output


# -- attack 3: drop, truncate, cut the tail ---------------------------------------------------


@pytest.mark.parametrize(
    "statements, named",
    [
        (["DROP TABLE orchestrator_audit"], "checkpoint 1"),
        (["DROP TABLE orchestrator_audit", "DROP TABLE orchestrator_checkpoint"], "ledger row 1"),
        (
            [
                "ALTER TABLE orchestrator_audit DISABLE TRIGGER USER",
                "TRUNCATE orchestrator_audit",
                "ALTER TABLE orchestrator_checkpoint DISABLE TRIGGER USER",
                "TRUNCATE orchestrator_checkpoint",
            ],
            "ledger row 1",
        ),
        (
            [
                "ALTER TABLE orchestrator_audit DISABLE TRIGGER USER",
                "TRUNCATE orchestrator_audit",
            ],
            "checkpoint 1",
        ),
        (
            [
                "DROP TABLE orchestrator_audit",
                "ALTER TABLE orchestrator_schema DROP COLUMN envelope",
                "DROP TABLE orchestrator_checkpoint",
                "DROP TABLE orchestrator_ledger",
            ],
            "database",
        ),
    ],
)
def test_dropped_or_truncated_trail_fails_verify_on_a_signing_env(
    signed: Project, statements: list[str], named: str
) -> None:
    ran_to_staging(signed)
    execute(signed, "staging", *statements)
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1, verify.output
    assert f"BROKEN at {named}" in verify.stdout, verify.stdout


def test_dropped_trail_looks_intact_without_signing_but_the_anchor_catches_it(
    pg_project: Project,
) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    done = pg_project.run("migrate", "staging", "--json")
    head = done.json()[0]["audit_head"]
    execute(pg_project, "staging", "DROP TABLE orchestrator_audit")
    verify = pg_project.run("audit", "verify", "--env", "staging")
    assert verify.code == 0 and "intact (0 rows" in verify.stdout  # the limit
    anchored = pg_project.run("audit", "verify", "--env", "staging", "--anchor", head)
    assert anchored.code == 1 and "BROKEN at anchor" in anchored.stdout, anchored.output


def test_a_truncated_tail_is_caught_by_the_anchor(signed: Project) -> None:
    """Cut the last run off entirely (its audit rows and its checkpoint): every remaining
    checkpoint still verifies, but the pipeline's anchor is gone."""
    ran_to_staging(signed)
    refused = signed.run("migrate", "staging", "--to", SHIPPED[0], "--json")  # a refusal: exit 2
    noop = signed.run("migrate", "staging", "--json")
    assert noop.code == 0
    extra = signed.run("downgrade", "staging", "--to", "-1", "--reason", "tail", "--json")
    assert extra.code == 0, extra.output
    head = extra.json()[0]["audit_head"]
    assert refused.code == 2
    cut = signed.query(
        "staging",
        "SELECT min(id) FROM orchestrator_audit WHERE run_id = :r".replace(
            ":r", f"'{extra.json()[0]['run_id']}'"
        ),
    )[0][0]
    execute(
        signed,
        "staging",
        "ALTER TABLE orchestrator_audit DISABLE TRIGGER USER",
        f"DELETE FROM orchestrator_audit WHERE id >= {cut}",
        "ALTER TABLE orchestrator_checkpoint DISABLE TRIGGER USER",
        "DELETE FROM orchestrator_checkpoint"
        " WHERE id = (SELECT max(id) FROM orchestrator_checkpoint)",
        "DELETE FROM orchestrator_ledger WHERE direction = 'down'",
    )
    anchored = signed.run("audit", "verify", "--env", "staging", "--anchor", head)
    assert anchored.code == 1, anchored.output
    # since the chain (Part 3) the cut run's entries still pin the rows: caught without anchor
    assert "BROKEN at anchor" in anchored.stdout or "which entry" in anchored.stdout
    assert signed.run("audit", "verify", "--env", "staging").code == 1


def test_appended_forged_rows_fail_verify_on_a_signing_env(signed: Project) -> None:
    ran_to_staging(signed)
    engine = signed.engine("staging")
    try:
        with engine.begin() as connection:
            # a correctly chained, correctly hashed row: only the key is missing
            ledger.append_audit(
                connection,
                [
                    {
                        "timestamp": "2026-01-01T00:00:00.000000Z",
                        "event": "run.succeeded",
                        "run_id": "f0f0f0f0f0f0",
                        "env": "staging",
                        "actor": "release-manager",
                        "outcome": "succeeded",
                    }
                ],
            )
    finally:
        engine.dispose()
    verify = signed.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "covered by no signed checkpoint" in verify.stdout, verify.output


# -- attack 4: edit an applied revision, then baseline; accept -----------------------------------


@pytest.mark.parametrize("sign", [True, False])
def test_baseline_refuses_an_edited_revision_and_accept_is_the_way(
    pg_project: Project, sign: bool
) -> None:
    if sign:
        sign_env(pg_project, "staging")
        sign_env(pg_project, "prod")
    ran_to_staging(pg_project)
    rev = SHIPPED[2]
    edit_revision(pg_project, rev)
    before = pg_project.query("staging", "SELECT count(*) FROM orchestrator_ledger")

    refused = pg_project.run("baseline", "staging", "--revision", HEAD, "--reason", "hide it")

    assert refused.code == 3, refused.output
    assert rev in refused.stderr and "orchestrator accept" in refused.stderr
    assert pg_project.query("staging", "SELECT count(*) FROM orchestrator_ledger") == before
    assert pg_project.run("status", "staging", "--json").json()[0]["drift"] == [rev]

    accepted = pg_project.run("accept", "staging", "--revision", rev, "--reason", "hot-fix comment")
    assert accepted.code == 0, accepted.output
    assert pg_project.run("status", "staging", "--json").json()[0]["drift"] == []
    event = [e for e in pg_project.audit_events("staging") if e["event"] == "checksum.accepted"]
    assert (
        len(event) == 1 and event[0]["revision"] == rev and event[0]["reason"] == "hot-fix comment"
    )
    assert event[0]["old_checksum"] != event[0]["new_checksum"]

    status = pg_project.run("status", "prod", "--json").json()[0]
    blocked = {b["revision"]: b["reason"] for b in status["blocked"]}
    assert blocked[rev].startswith("accepted on staging (not run)")
    promote = pg_project.run("promote", "prod", "--approve")
    assert promote.code == 3 and f"{rev}: accepted on staging (not run)" in promote.stderr
    assert pg_project.version("prod") == []
    # a baseline now cannot launder `accepted` into evidence of a run
    assert pg_project.run("baseline", "staging", "--revision", HEAD, "--reason", "x").code == 0
    assert pg_project.run("promote", "prod", "--approve").code == 3


def test_accept_on_sqlite_clears_the_drift_it_names(sqlite_project: Project) -> None:
    """accept's SQLite path (the one `make test-fast` runs): drift until accepted, once."""
    ran_to_staging(sqlite_project)
    rev = SHIPPED[2]
    edit_revision(sqlite_project, rev)
    assert sqlite_project.run("status", "staging", "--json").json()[0]["drift"] == [rev]
    accepted = sqlite_project.run("accept", "staging", "--revision", rev, "--reason", "hot-fix")
    assert accepted.code == 0, accepted.output
    assert sqlite_project.run("status", "staging", "--json").json()[0]["drift"] == []
    events = sqlite_project.audit_events("staging")
    (event,) = [e for e in events if e["event"] == "checksum.accepted"]
    assert event["revision"] == rev and event["reason"] == "hot-fix"
    assert sqlite_project.run("audit", "verify", "--env", "staging").code == 0


def test_accept_needs_approval_where_required_and_a_reason(signed: Project) -> None:
    ran_to_staging(signed)
    assert signed.run("migrate", "prod", "--to", SHIPPED[1], "--approve").code == 0
    edit_revision(signed, SHIPPED[1])
    refused = signed.run("accept", "prod", "--revision", SHIPPED[1], "--reason", "r")
    assert refused.code == 3 and "requires approval" in refused.stderr
    assert signed.run("status", "prod", "--json").json()[0]["drift"] == [SHIPPED[1]]
    assert signed.run("accept", "prod", "--revision", SHIPPED[1], "--reason", " ").code == 2
    not_applied = signed.run("accept", "prod", "--revision", HEAD, "--reason", "r", "--approve")
    assert not_applied.code == 2 and "not applied" in not_applied.stderr
    done = signed.run("accept", "prod", "--revision", SHIPPED[1], "--reason", "r", "--approve")
    assert done.code == 0, done.output
    assert signed.run("status", "prod", "--json").json()[0]["drift"] == []
    assert signed.run("audit", "verify", "--env", "prod").code == 0


# -- rotation and adoption ----------------------------------------------------------------------


def test_key_rotation_keeps_old_rows_valid_through_previous_keys(signed: Project) -> None:
    ran_to_staging(signed)
    sign_env(signed, "staging", key_name="staging-2026")  # new key pair, new public_key
    path = signed.path / "environments" / "staging.yaml"

    without = signed.run("promote", "prod", "--approve")
    assert without.code == 3, without.output
    # the chain's newest entry no longer verifies: the whole chain is not believed
    assert "staging's evidence is broken at entry" in without.stderr
    assert signed.run("audit", "verify", "--env", "staging").code == 1

    path.write_text(path.read_text() + "  previous_keys: [keys/staging.pub]\n")
    assert signed.run("audit", "verify", "--env", "staging").code == 0
    assert signed.run("promote", "prod", "--approve").code == 0
    assert signed.version("prod") == [HEAD]
    # new rows are signed with the new key only
    signed.add_revision("f00000000001", HEAD, "op.execute('SELECT 1')")
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging").code == 0
    envelope = signed.query(
        "staging", "SELECT envelope FROM orchestrator_ledger ORDER BY id DESC LIMIT 1"
    )[0][0]
    assert signing.verify(envelope, [public_key(signed, "staging-2026")]).valid
    assert not signing.verify(envelope, [public_key(signed, "staging")]).valid
    assert signed.run("promote", "prod", "--approve").code == 0


def test_keys_adopt_signs_an_existing_installs_evidence(pg_project: Project) -> None:
    ran_to_staging(pg_project)  # unsigned, as before signing existed
    sign_env(pg_project, "staging")
    refused = pg_project.run("promote", "prod", "--approve")
    assert refused.code == 3 and "staging's evidence is missing" in refused.stderr
    verify = pg_project.run("audit", "verify", "--env", "staging")
    assert verify.code == 1 and "no signed checkpoint" in verify.stdout

    edited = edit_revision(pg_project, SHIPPED[1])
    original = edited.read_text().replace("\n# planted: prod would run this\n", "")
    no = pg_project.run("keys", "adopt", "staging", "--reason", "start signing")
    assert no.code == 3 and SHIPPED[1] in no.stderr  # never signs an unreviewed edit
    edited.write_text(original)

    adopted = pg_project.run("keys", "adopt", "staging", "--reason", "start signing", "--json")
    assert adopted.code == 0, adopted.output
    assert adopted.json()[0]["adopted"] == SHIPPED
    assert adopted.json()[0]["applied"] == []  # it signed rows, it applied nothing
    succeeded = [e for e in pg_project.audit_events("staging") if e["event"] == "run.succeeded"]
    assert succeeded[-1]["applied"] == [] and succeeded[-1]["adopted"] == SHIPPED
    events = [e for e in pg_project.audit_events("staging") if e["event"] == "ledger.adopted"]
    assert events and events[-1]["reason"] == "start signing"
    assert pg_project.run("audit", "verify", "--env", "staging").code == 0
    assert pg_project.run("promote", "prod", "--approve").code == 0
    again = pg_project.run("keys", "adopt", "staging", "--reason", "again", "--json")
    assert again.code == 0 and again.json()[0]["adopted"] == []
    assert pg_project.run("keys", "adopt", "dev", "--reason", "x").code == 2  # dev signs nothing


def test_tables_of_an_earlier_release_are_migrated_in_place(pg_project: Project) -> None:
    assert pg_project.run("migrate", "dev", "--to", SHIPPED[1]).code == 0
    execute(
        pg_project,
        "dev",
        "ALTER TABLE orchestrator_ledger DROP COLUMN envelope",
        "ALTER TABLE orchestrator_schema DROP COLUMN envelope",
        "DROP TABLE orchestrator_checkpoint",
    )
    assert pg_project.run("status", "dev", "--json").code == 0  # reads the old shape
    assert pg_project.run("migrate", "staging", "--to", SHIPPED[1]).code == 0  # gate reads it
    assert pg_project.run("migrate", "dev").code == 0
    columns = pg_project.query(
        "dev",
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'orchestrator_ledger' AND column_name = 'envelope'",
    )
    assert columns == [("envelope",)]
    schema_columns = pg_project.query(
        "dev",
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'orchestrator_schema' AND column_name = 'envelope'",
    )
    assert schema_columns == [("envelope",)]
    assert pg_project.run("audit", "verify", "--env", "dev").code == 0


# -- the recorded schema -------------------------------------------------------------------


def _drift_by_hand_and_cover_it(project: Project, env: str, rewrite: bool) -> None:
    """The deploy role's hot fix, then the recorded schema made to match it: a new row
    (`rewrite=False`) or the run's own row rewritten, with the fingerprint, description and
    catalog stamp of the schema as it now is, so `drift` and `status` would see nothing."""
    from orchestrator.schema.description import fingerprint
    from orchestrator.schema.reader import catalog_stamp, read_schema

    execute(project, env, "CREATE INDEX ix_forged ON users (display_name)")
    engine = project.engine(env)
    try:
        with engine.begin() as connection:
            live = read_schema(connection)
            values = {
                "fingerprint": fingerprint(live),
                "description": ledger.canonical(live),
                "stamp": catalog_stamp(connection),
            }
            if rewrite:
                connection.execute(
                    sa.text(
                        "UPDATE orchestrator_schema SET fingerprint = :fingerprint,"
                        " description = :description, stamp = :stamp"
                        " WHERE id = (SELECT max(id) FROM orchestrator_schema)"
                    ),
                    values,
                )
            else:
                connection.execute(
                    sa.text(
                        "INSERT INTO orchestrator_schema (heads, fingerprint, description, stamp,"
                        " run_id, env, actor, at) SELECT heads, :fingerprint, :description,"
                        " :stamp, run_id, env, actor, at FROM orchestrator_schema"
                        " WHERE id = (SELECT max(id) FROM orchestrator_schema)"
                    ),
                    values,
                )
    finally:
        engine.dispose()


def _schema_of(project: Project, env: str) -> str:
    result = project.run("status", "--json")
    assert result.code == 0, result.output
    return next(row["schema"] for row in result.json() if row["env"] == env)


def test_a_recorded_schema_is_signed_and_a_forged_one_hides_no_drift(signed: Project) -> None:
    ran_to_staging(signed)
    ((envelope, target),) = signed.query("staging", "SELECT envelope, env FROM orchestrator_schema")
    verdict = signing.verify(envelope, [public_key(signed, "staging")], trust.SCHEMA_TYPE)
    assert verdict.valid and verdict.payload_json()["target"] == target == "staging"

    _drift_by_hand_and_cover_it(signed, "staging", rewrite=False)
    assert _schema_of(signed, "staging") == "drifted"  # the run's signed row still counts
    drift = signed.run("drift", "staging")
    assert drift.code == 3, drift.output
    assert "+ index ix_forged on users (display_name)" in drift.stdout
    plan = signed.run("plan", "staging")
    assert "ix_forged" in plan.stdout, plan.output
    assert signed.run("migrate", "staging").code == 0  # schema_drift: warn records it
    (drifted,) = [e for e in signed.audit_events("staging") if e["event"] == "schema.drifted"]
    assert "+ index ix_forged on users (display_name)" in drifted["differences"]


def test_a_rewritten_schema_record_is_no_evidence_on_a_signing_env(signed: Project) -> None:
    ran_to_staging(signed)
    _drift_by_hand_and_cover_it(signed, "staging", rewrite=True)
    # not "ok": no record verifies, so staging is judged against dev at the same revision
    assert _schema_of(signed, "staging") == "diverged"
    drift = signed.run("drift", "staging")
    assert drift.code == 2, drift.output
    assert "No schema whose signature verifies was recorded for staging" in drift.stderr


def test_without_signing_a_forged_schema_record_hides_the_drift(pg_project: Project) -> None:
    ran_to_staging(pg_project)
    _drift_by_hand_and_cover_it(pg_project, "staging", rewrite=False)
    # the limit without signing: `drift` and a run's check see the forged record, and only
    # the comparison with dev at the same revision (status's `diverged`) still shows it
    assert pg_project.run("drift", "staging").code == 0
    assert "ix_forged" not in pg_project.run("plan", "staging").stdout
    assert _schema_of(pg_project, "staging") == "diverged"


def test_keys_adopt_signs_the_recorded_schema_only_while_it_is_the_live_one(
    pg_project: Project,
) -> None:
    ran_to_staging(pg_project)  # its schema recorded unsigned, as before signing existed
    sign_env(pg_project, "staging")
    newest = "SELECT envelope FROM orchestrator_schema ORDER BY id DESC LIMIT 1"
    execute(pg_project, "staging", "CREATE INDEX ix_hand ON users (display_name)")
    adopted = pg_project.run("keys", "adopt", "staging", "--reason", "start signing")
    assert adopted.code == 0, adopted.output
    assert "its schema is no longer the one recorded" in adopted.output
    assert pg_project.query("staging", newest) == [(None,)]  # the hand change is not vouched for

    execute(pg_project, "staging", "DROP INDEX ix_hand")
    again = pg_project.run("keys", "adopt", "staging", "--reason", "schema as recorded")
    assert again.code == 0 and "no longer" not in again.output, again.output
    ((envelope,),) = pg_project.query("staging", newest)
    key = public_key(pg_project, "staging")
    assert signing.verify(envelope, [key], trust.SCHEMA_TYPE).valid
    assert _schema_of(pg_project, "staging") == "ok"


def test_a_schema_table_of_an_earlier_release_is_read_as_unsigned(signed: Project) -> None:
    ran_to_staging(signed)
    execute(signed, "staging", "ALTER TABLE orchestrator_schema DROP COLUMN envelope")
    assert _schema_of(signed, "staging") == "unknown"  # nothing it holds counts as recorded
    drift = signed.run("drift", "staging")
    assert drift.code == 2 and "whose signature verifies" in drift.stderr, drift.output
    assert signed.run("migrate", "staging").code == 0  # the run puts the column back


def test_a_fleets_no_op_look_takes_no_forged_schema_record_for_no_drift(
    pg_project: Project,
    pg_cluster,  # noqa: ANN001
) -> None:
    """A fleet's no-op re-run and `status` read each tenant in one batch, its recorded schema
    and catalog stamp among them. On one tenant the deploy role hot-fixes the schema and
    records a newer schema row with its fingerprint, description and stamp: the batch must
    check that row's signature as a run does, so the tenant is still run (its drift
    recorded) and `status` still says drifted."""
    from orchestrator.schema.description import fingerprint
    from orchestrator.schema.reader import catalog_stamp, read_schema

    names = [f"forge_{os.getpid()}_{i}" for i in range(2)]
    for name in names:
        pg_cluster.create_database(name)
    envs = pg_project.path / "environments"
    (envs / "fleet.yaml").write_text(
        "name: fleet\ndatabase:\n  url_env: FLEET_SERVER_URL\n  databases_file: fleet.txt\n"
    )
    (envs / "fleet.txt").write_text("\n".join(names) + "\n")
    pg_project.extra_env["FLEET_SERVER_URL"] = pg_cluster.url("postgres")
    sign_env(pg_project, "fleet")
    assert pg_project.run("migrate", "fleet").code == 0

    forged = names[1]
    engine = sa.create_engine(pg_cluster.url(forged))
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE INDEX ix_forged ON users (display_name)"))
        with engine.begin() as connection:
            live = read_schema(connection)
            connection.execute(
                sa.text(
                    "INSERT INTO orchestrator_schema (heads, fingerprint, description, stamp,"
                    " run_id, env, actor, at) SELECT heads, :f, :d, :s, run_id, env, actor, at"
                    " FROM orchestrator_schema WHERE id = (SELECT max(id) FROM orchestrator_schema)"
                ),
                {
                    "f": fingerprint(live),
                    "d": ledger.canonical(live),
                    "s": catalog_stamp(connection),
                },
            )
    finally:
        engine.dispose()

    status = pg_project.run("status", "fleet", "--targets", "--json")
    assert status.code == 0, status.output
    assert {row["target"]: row["schema"] for row in status.json()} == {
        names[0]: "ok",
        forged: "drifted",
    }

    def events(name: str) -> list[str]:
        with pg_cluster.connect(name) as conn:
            return [e for (e,) in conn.execute("SELECT event FROM orchestrator_audit ORDER BY id")]

    before = {name: len(events(name)) for name in names}
    again = pg_project.run("migrate", "fleet")
    assert again.code == 0, again.output
    assert len(events(names[0])) == before[names[0]]  # told apart: not run
    new = events(forged)[before[forged] :]
    assert {"schema.drifted", "run.succeeded"} <= set(new), new  # run, its drift recorded
