"""Production safety policies (SPEC "Environment files" policy, "Production safety", waivers),
through the CLI on real databases."""

from __future__ import annotations

from typing import Any

import pytest
from projectkit import HEAD, SHIPPED, Project

NEW = "f00000000001"
PLAIN_INDEX = 'op.create_index("ix_users_name", "users", ["name"])'
DROP_INDEX = 'op.drop_index("ix_users_name", table_name="users")'
RULE = "require-concurrent-index-creation"


@pytest.fixture(params=["pg", "sqlite"])
def project(request: pytest.FixtureRequest) -> Project:
    return request.getfixturevalue(f"{request.param}_project")


def run_events(project: Project, env: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """The audit events of one run (by default the last one) on env."""
    events = project.audit_events(env)
    run_id = run_id or events[-1]["run_id"]
    return [e for e in events if e["run_id"] == run_id]


def env_yaml(
    name: str,
    *,
    promotes_from: str | None = None,
    lint: str = "warn",
    allow_downgrade: bool = True,
    require_approval: bool = False,
) -> str:
    lines = [f"name: {name}"]
    if promotes_from:
        lines.append(f"promotes_from: {promotes_from}")
    lines += [
        "database:",
        f"  url_env: {name.upper()}_DATABASE_URL",
        "policy:",
        f"  require_approval: {str(require_approval).lower()}",
        f"  allow_downgrade: {str(allow_downgrade).lower()}",
        f"  lint: {lint}",
    ]
    return "\n".join(lines) + "\n"


# -- approval ------------------------------------------------------------------------------------


def test_prod_refuses_without_approve_and_records_the_ticket(project: Project) -> None:
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0

    refused = project.run("migrate", "prod", "--ticket", "CHG-1")
    assert refused.code == 3
    assert "requires approval" in refused.stderr and "--approve" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert project.version("prod") == []
    events = run_events(project, "prod")
    assert [e["event"] for e in events] == ["run.started", "run.refused"]
    assert events[-1]["outcome"] == "refused"
    assert all(e["ticket"] == "CHG-1" for e in events)

    done = project.run("migrate", "prod", "--approve", "--ticket", "CHG-2")
    assert done.code == 0, done.stderr
    assert project.version("prod") == [HEAD]
    events = run_events(project, "prod")
    names = [e["event"] for e in events]
    assert names[0] == "run.started" and "run.succeeded" in names
    assert names.count("migration.applied") == len(SHIPPED)
    assert all(e.get("ticket") == "CHG-2" for e in events), events


def test_approval_is_not_asked_where_the_policy_does_not_require_it(project: Project) -> None:
    result = project.run("migrate", "dev")
    assert result.code == 0, result.stderr


# -- downgrade -----------------------------------------------------------------------------------


def test_downgrade_refused_then_forced_with_reason_blocks_the_next_env(project: Project) -> None:
    project.write_env("staging", env_yaml("staging", promotes_from="dev", allow_downgrade=False))
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    ledger_before = project.ledger("staging")

    refused = project.run("downgrade", "staging", "--to", "-1", "--reason", "bad index")
    assert refused.code == 3
    assert "allow_downgrade" in refused.stderr and "--force" in refused.stderr
    assert project.version("staging") == [HEAD]
    assert project.ledger("staging") == ledger_before
    events = run_events(project, "staging")
    assert [e["event"] for e in events] == ["run.started", "run.refused"]
    assert events[-1]["reason"] == "bad index"

    no_reason = project.run("downgrade", "staging", "--to", "-1", "--force", "--reason", " ")
    assert no_reason.code == 2 and "--reason" in no_reason.stderr
    assert project.version("staging") == [HEAD]

    forced = project.run(
        "downgrade",
        "staging",
        "--to",
        "-1",
        "--force",
        "--reason",
        "bad index",
        "--ticket",
        "INC-7",
    )
    assert forced.code == 0, forced.stderr
    assert project.version("staging") == [SHIPPED[-2]]
    assert project.ledger("staging")[-1] == (HEAD, "down")
    events = run_events(project, "staging")
    assert events[0]["event"] == "run.started" and events[0]["forced"] is True
    reverted = [e for e in events if e["event"] == "migration.reverted"]
    assert [e["revision"] for e in reverted] == [HEAD]
    assert all(e["reason"] == "bad index" and e["ticket"] == "INC-7" for e in events)
    assert "run.succeeded" in [e["event"] for e in events]

    blocked = project.run("migrate", "prod", "--approve")
    assert blocked.code == 3
    assert f"{HEAD}: rolled back on staging" in blocked.stderr
    assert project.version("prod") == []


def test_prod_downgrade_needs_force_and_approval(project: Project) -> None:
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    assert project.run("migrate", "prod", "--approve").code == 0

    assert project.run("downgrade", "prod", "--to", "-1", "--reason", "r", "--approve").code == 3
    unapproved = project.run("downgrade", "prod", "--to", "-1", "--reason", "r", "--force")
    assert unapproved.code == 3 and "requires approval" in unapproved.stderr
    assert project.version("prod") == [HEAD]

    done = project.run("downgrade", "prod", "--to", "-1", "--reason", "r", "--force", "--approve")
    assert done.code == 0, done.stderr
    assert project.version("prod") == [SHIPPED[-2]]


# -- lint ----------------------------------------------------------------------------------------


def test_lint_error_refuses_a_blocking_index_and_warn_lets_it_through(pg_project: Project) -> None:
    project = pg_project
    assert project.run("migrate", "dev").code == 0
    project.add_revision(NEW, HEAD, PLAIN_INDEX, DROP_INDEX)

    project.write_env("dev", env_yaml("dev", lint="error"))
    refused = project.run("migrate", "dev")
    assert refused.code == 3
    assert f"{NEW} breaks {RULE}" in refused.stderr
    assert f"# orchestrator: allow {RULE}" in refused.stderr  # says how to waive it
    assert project.version("dev") == [HEAD]
    events = run_events(project, "dev")
    assert [e["event"] for e in events] == ["run.started", "run.refused"]
    assert [f["rule"] for f in events[-1]["findings"]] == [RULE]

    project.write_env("dev", env_yaml("dev", lint="warn"))
    warned = project.run("migrate", "dev")
    assert warned.code == 0, warned.stderr
    assert project.version("dev") == [NEW]
    assert any('"lint.finding"' in line and RULE in line for line in warned.stderr.splitlines())


def test_lint_off_does_not_lint(pg_project: Project) -> None:
    project = pg_project
    project.add_revision(NEW, HEAD, PLAIN_INDEX, DROP_INDEX)
    project.write_env("dev", env_yaml("dev", lint="off"))
    result = project.run("migrate", "dev")
    assert result.code == 0, result.stderr
    assert "lint.finding" not in result.stderr


def test_a_waived_rule_passes_lint_error_and_is_on_every_event(pg_project: Project) -> None:
    project = pg_project
    assert project.run("migrate", "dev", "--to", SHIPPED[-2]).code == 0
    project.add_revision(
        NEW,
        HEAD,
        PLAIN_INDEX,
        DROP_INDEX,
        header=f"# orchestrator: allow {RULE}  -- users is small",
    )
    project.write_env("dev", env_yaml("dev", lint="error"))

    result = project.run("migrate", "dev")
    assert result.code == 0, result.stderr
    assert project.version("dev") == [NEW]
    events = run_events(project, "dev")
    assert events[0]["event"] == "run.started"
    assert "run.succeeded" in [e["event"] for e in events]
    # the shipped index revision carries its own waiver of the same rule
    expected = sorted([f"{HEAD}:{RULE}", f"{NEW}:{RULE}"])
    assert all(e.get("waivers") == expected for e in events), events
