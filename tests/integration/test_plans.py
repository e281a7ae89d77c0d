"""Release plans (SPEC Part 2): plan in the staging job, review, approve with a second key,
apply in a prod job that holds only prod's URL and the repo; then every way to get prod to
run something the approved plan does not say, each refused with its cause.

Real PostgreSQL, the CLI in subprocesses, staging and prod signing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from projectkit import HEAD, SHIPPED, Project, sign_env

from orchestrator.core import signing


def approver(project: Project, name: str) -> str:
    """A reviewer's key pair: the public half committed, the private half in a variable."""
    private = project.path / "secrets" / f"{name}.key"
    made = project.run("keys", "generate", name, "--private-key-out", str(private))
    assert made.code == 0, made.output
    return str(private)


def set_policy(project: Project, env: str, **policy: Any) -> None:
    path = project.path / "environments" / f"{env}.yaml"
    text = path.read_text()
    lines = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in policy.items())
    path.write_text(text.replace("policy:\n", "policy:\n" + lines, 1))


@pytest.fixture
def release(pg_project: Project) -> Project:
    """staging and prod sign; prod needs a plan approved by the release manager."""
    project = pg_project
    sign_env(project, "staging")
    sign_env(project, "prod")
    project.extra_env["RM_KEY"] = approver(project, "release-manager")
    project.extra_env["MALLORY_KEY"] = approver(project, "mallory")
    set_policy(project, "prod", require_plan=True, plan_approvers=["keys/release-manager.pub"])
    assert project.run("migrate", "dev").code == 0
    staged = project.run("migrate", "staging")
    assert staged.code == 0, staged.output
    return project


def make_plan(project: Project, *args: str) -> Path:
    path = project.path / "plan.json"
    made = project.run("plan", "prod", "--out", str(path), *args)
    assert made.code == 0, made.output
    return path


def approve(project: Project, plan: Path, key_env: str = "RM_KEY") -> None:
    done = project.run("plan", "approve", str(plan), "--key-env", key_env)
    assert done.code == 0, done.output


def apply(project: Project, plan: Path, *args: str) -> Any:
    """The prod job: prod's URL and key, the repo, and nothing of staging's."""
    return project.run(
        "migrate", "prod", "--plan", str(plan), "--approve", *args, STAGING_DATABASE_URL=""
    )


def rewrite(plan: Path, change: Any) -> None:
    """Change the plan's payload as an attacker with write access to the file would."""
    envelope = json.loads(plan.read_text())
    body = json.loads(base64.b64decode(envelope["payload"]))
    change(body)
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    envelope["payload"] = base64.b64encode(payload).decode()
    plan.write_text(json.dumps(envelope))


def resign(project: Project, plan: Path, key_env: str) -> None:
    """Sign the plan as it is now with the private key in `key_env` (a compromised writer)."""
    key = signing.load_private_key(Path(project.extra_env[key_env]).read_bytes())
    envelope = json.loads(plan.read_text())
    plan.write_text(json.dumps(signing.add_signature({**envelope, "signatures": []}, key)))


def test_plan_review_approve_apply_without_staging_access(release: Project) -> None:
    plan = make_plan(release)
    shown = release.run("plan", "show", str(plan), "--format", "markdown")
    assert shown.code == 0, shown.output
    for rev in SHIPPED:
        assert rev in shown.stdout
    assert "```sql" in shown.stdout and "CREATE TABLE" in shown.stdout
    assert "ran on staging/staging by tester" in shown.stdout and "signed" in shown.stdout

    unapproved = apply(release, plan)
    assert unapproved.code == 3, unapproved.output
    assert "lacks a required approval" in unapproved.stderr
    assert release.version("prod") == []

    approve(release, plan)
    done = apply(release, plan, "--json")
    assert done.code == 0, done.output
    assert release.version("prod") == [HEAD]
    sha = json.loads(plan.read_text())["payload"]
    events = [
        e for e in release.audit_events("prod") if e.get("run_id") == done.json()[0]["run_id"]
    ]
    assert events and all(e.get("plan_sha256") for e in events)
    import hashlib

    assert {e["plan_sha256"] for e in events} == {hashlib.sha256(base64.b64decode(sha)).hexdigest()}
    assert all(e.get("plan_approvals") == ["keys/release-manager.pub"] for e in events)

    again = apply(release, plan)  # applying an applied plan is a no-op
    assert again.code == 0, again.output
    assert [r for r, d in release.ledger("prod") if d == "up"] == SHIPPED


def test_prod_without_a_plan_is_refused_where_plans_are_required(release: Project) -> None:
    done = release.run("migrate", "prod", "--approve")
    assert done.code == 3, done.output
    assert "policy.require_plan" in done.stderr
    assert release.version("prod") == []


@pytest.mark.parametrize(
    ("attack", "cause"),
    [
        ("altered", "altered after it was approved"),
        ("unlisted", "lacks a required approval"),
        ("expired", "expired"),
        ("other_env", "the plan is for prod, not staging"),
        ("forged_evidence", "not signed by staging's key"),
        ("edited_file", "changed since the plan was made"),
        ("heads_moved", "heads moved since the plan"),
    ],
)
def test_every_departure_from_the_approved_plan_is_refused(
    release: Project, attack: str, cause: str
) -> None:
    plan = make_plan(release)
    env = "prod"
    if attack == "altered":
        approve(release, plan)
        rewrite(plan, lambda b: b["steps"][0].update(checksum="0" * 64))
    elif attack == "unlisted":  # refused at once by `plan approve`, nothing added
        before = plan.read_bytes()
        refused = release.run("plan", "approve", str(plan), "--key-env", "MALLORY_KEY")
        assert refused.code == 3, refused.output
        assert "not one of prod's plan approvers" in refused.output
        assert plan.read_bytes() == before
    elif attack == "expired":
        rewrite(plan, lambda b: b.update(expires_at="2020-01-01T00:00:00Z"))
        approve(release, plan)  # even approved, an old plan is stale
    elif attack == "other_env":
        approve(release, plan)
        env = "staging"
    elif attack == "forged_evidence":
        # plant code in a revision staging ran, and claim in the plan that staging ran the
        # planted file: the plan's steps and evidence rows carry the new checksum
        path = next(release.versions.glob(f"{SHIPPED[1]}_*.py"))
        path.write_text(path.read_text() + "\n# planted\n")
        from orchestrator.migrations.runner import AlembicProject

        planted = AlembicProject(release.path / "alembic.ini").graph.get(SHIPPED[1]).checksum

        def forge(body: dict[str, Any]) -> None:
            for step in body["steps"]:
                if step["revision"] == SHIPPED[1]:
                    step["checksum"] = planted
            for rows in body["evidence"].values():
                for row in rows:
                    if row["revision"] == SHIPPED[1]:
                        row["checksum"] = planted

        rewrite(plan, forge)
        resign(release, plan, "PROD_KEY")  # even re-signed by a key that may write plans
        approve(release, plan)  # an approval is not evidence
    elif attack == "edited_file":
        approve(release, plan)
        path = next(release.versions.glob(f"{SHIPPED[1]}_*.py"))
        path.write_text(path.read_text() + "\n# planted after the review\n")
    elif attack == "heads_moved":
        approve(release, plan)
        first = release.path / "first.json"
        made = release.run("plan", "prod", "--to", SHIPPED[0], "--out", str(first))
        assert made.code == 0, made.output
        approve(release, first)
        assert apply(release, first).code == 0
    before = release.version("prod")
    done = release.run("migrate", env, "--plan", str(plan), "--approve", STAGING_DATABASE_URL="")
    assert done.code == 3, done.output
    assert cause in done.stderr, done.stderr
    assert release.version("prod") == before  # nothing ran


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ('{"payloadType": "application/vnd.alembic-orchestrator.plan+json", "pay', "not JSON"),
        ("[1, 2]", "not a signing envelope"),
        ("version", "format 99"),
    ],
)
def test_unreadable_plan_files_are_usage_errors(
    release: Project, content: str | None, message: str
) -> None:
    plan = release.path / "plan.json"
    if content == "version":
        plan = make_plan(release)
        rewrite(plan, lambda b: b.update(format=99))
    elif content is not None:
        plan.write_text(content)
    done = apply(release, plan)
    assert done.code == 2, done.output
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_fleet_plan_is_applied_shard_by_shard(pg_project: Project, pg_cluster: Any) -> None:
    project = pg_project
    sign_env(project, "staging")
    tenants = ["acme", "globex", "initech"]
    for name in tenants:
        pg_cluster.create_database(name)
    try:
        path = project.path / "environments" / "prod.yaml"
        path.write_text(
            "name: prod\npromotes_from: staging\n"
            "database:\n  url_env: PROD_SERVER_URL\n  databases: [acme, globex, initech]\n"
            "policy:\n  require_approval: true\n  lint: off\n"
        )
        project.extra_env["PROD_SERVER_URL"] = pg_cluster.url("postgres")
        assert project.run("migrate", "dev").code == 0
        assert project.run("migrate", "staging").code == 0
        plan = make_plan(project)
        body = json.loads(base64.b64decode(json.loads(plan.read_text())["payload"]))
        assert sorted(t["name"] for t in body["targets"]) == tenants
        for shard in ("1/2", "2/2"):
            done = project.run(
                "migrate",
                "prod",
                "--plan",
                str(plan),
                "--approve",
                "--shard",
                shard,
                STAGING_DATABASE_URL="",
            )
            assert done.code == 0, done.output
        for name in tenants:
            engine = sa.create_engine(pg_cluster.url(name))
            try:
                with engine.connect() as connection:
                    version = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
                    assert [v for (v,) in version] == [HEAD], name
            finally:
                engine.dispose()
    finally:
        for name in tenants:
            pg_cluster.drop_database(name)


def test_envelope_is_dsse_readable_by_other_tools(release: Project) -> None:
    plan = make_plan(release)
    approve(release, plan)
    envelope = json.loads(plan.read_text())
    key = signing.load_public_key((release.path / "keys" / "release-manager.pub").read_bytes())
    verdict = signing.verify(envelope, [key], "application/vnd.alembic-orchestrator.plan+json")
    assert verdict.valid
    body = json.loads(verdict.payload or b"")
    assert body["env"] == "prod" and [s["revision"] for s in body["steps"]] == SHIPPED
    assert all(len(s["sql_sha256"]) == 64 for s in body["steps"])
