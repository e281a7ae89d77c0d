"""The promotion gate (SPEC "The promotion gate"), through the CLI on real databases."""

from __future__ import annotations

import pytest
from projectkit import HEAD, SHIPPED, Project


@pytest.fixture(params=["pg", "sqlite"])
def project(request: pytest.FixtureRequest) -> Project:
    return request.getfixturevalue(f"{request.param}_project")


def test_prod_refuses_what_staging_has_not_run_and_stays_untouched(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    assert project.run("migrate", "prod", "--approve", "--to", SHIPPED[1]).code == 0
    before = (project.schema("prod"), project.version("prod"), project.ledger("prod"))

    refused = project.run("migrate", "prod", "--approve")

    assert refused.code == 3
    for rev in SHIPPED[3:]:
        assert f"{rev}: not run on staging" in refused.stderr
    assert (project.schema("prod"), project.version("prod"), project.ledger("prod")) == before
    events = [e["event"] for e in project.audit_events("prod")][-3:]
    assert events == ["run.started", "gate.refused", "run.refused"]


def test_prod_passes_once_staging_ran_the_same_scripts(project: Project) -> None:
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    result = project.run("migrate", "prod", "--approve")
    assert result.code == 0, result.stderr
    assert project.version("prod") == [HEAD]
    assert [r for r, d in project.ledger("prod")] == SHIPPED


def test_revision_rolled_back_on_staging_is_refused(project: Project) -> None:
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    down = project.run("downgrade", "staging", "--to", "-1", "--reason", "bad index")
    assert down.code == 0, down.stderr
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3
    assert f"{HEAD}: rolled back on staging" in refused.stderr
    assert project.version("prod") == []


def test_revision_edited_after_staging_ran_it_is_refused_and_shows_as_drift(
    project: Project,
) -> None:
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    path = next(project.versions.glob(f"{HEAD}_*.py"))
    path.write_text(path.read_text() + "\n# an innocent-looking edit\n")

    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3
    assert f"{HEAD}: edited since staging ran it" in refused.stderr

    status = project.run("status", "--json")
    assert status.code == 0, status.stderr
    rows = {r["env"]: r for r in status.json()}
    assert rows["staging"]["drift"] == [HEAD]
    assert [b["revision"] for b in rows["prod"]["blocked"]] == [HEAD]


def test_line_endings_alone_are_not_an_edit(project: Project) -> None:
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    path = next(project.versions.glob(f"{HEAD}_*.py"))
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert project.run("migrate", "prod", "--approve").code == 0


def test_promote_goes_exactly_as_far_as_the_predecessor(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    assert project.run("promote", "staging").code == 0
    assert project.version("staging") == [HEAD]
    assert project.run("migrate", "dev", "--to", SHIPPED[0]).code == 2  # below: not an upgrade


def test_promote_stops_at_the_predecessors_revision_below_head(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    result = project.run("promote", "prod", "--approve", "--json")
    assert result.code == 0, result.output
    assert result.json()[0]["applied"] == SHIPPED[:3]
    assert project.version("prod") == [SHIPPED[2]]
    assert [r for r, _ in project.ledger("prod")] == SHIPPED[:3]


def test_migrate_refuses_a_drifted_environment(project: Project) -> None:
    """A revision this database ran was edited since: nothing more runs until that is fixed."""
    assert project.run("migrate", "dev", "--to", SHIPPED[3]).code == 0
    path = next(project.versions.glob(f"{SHIPPED[1]}_*.py"))
    path.write_text(path.read_text() + "\n# edited after it ran\n")
    before = (project.schema("dev"), project.version("dev"), project.ledger("dev"))

    for args in (["migrate", "dev"], ["migrate", "dev", "--to", SHIPPED[3]]):
        refused = project.run(*args)
        assert refused.code == 3, (args, refused.output)
        assert f"Refused: {SHIPPED[1]} changed since dev ran it (checksum drift)" in refused.stderr
        assert (project.schema("dev"), project.version("dev"), project.ledger("dev")) == before
    (event,) = [e for e in project.audit_events("dev") if e["event"] == "run.refused"][-1:]
    assert event["drift"] == [SHIPPED[1]]


def test_plan_exits_3_when_the_run_would_be_refused(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    assert project.run("plan", "prod").code == 3  # the gate: staging has not run the rest
    as_json = project.run("plan", "prod", "--json")
    assert as_json.code == 3 and as_json.json()["would_refuse"] is True
    allowed = project.run("plan", "prod", "--to", SHIPPED[2], "--json")
    assert allowed.code == 0, allowed.output
    assert allowed.json()["would_refuse"] is False

    path = next(project.versions.glob(f"{SHIPPED[0]}_*.py"))
    path.write_text(path.read_text() + "\n# edited after it ran\n")
    drifted = project.run("plan", "staging", "--json")  # staging ran SHIPPED[0]: drift
    assert drifted.code == 3, drifted.output
    assert drifted.json()["drift"] == [SHIPPED[0]]


def test_plan_exits_3_when_lint_would_refuse(project: Project) -> None:
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0
    plain_index = 'op.create_index("ix_users_name", "users", ["name"])'
    project.add_revision("f00000000001", HEAD, plain_index)
    for env in ("dev", "staging"):
        assert project.run("migrate", env).code == 0  # lint: warn there
    assert project.run("plan", "prod", "--to", HEAD).code == 0
    result = project.run("plan", "prod", "--json")  # lint: error on prod
    assert result.code == 3, result.output
    assert result.json()["would_refuse"] is True
    blocking = [(f["revision"], f["rule"]) for f in result.json()["lint"] if not f["waived"]]
    assert blocking == [("f00000000001", "require-concurrent-index-creation")]


def test_to_below_current_points_at_downgrade(project: Project) -> None:
    assert project.run("migrate", "dev").code == 0
    result = project.run("migrate", "dev", "--to", SHIPPED[1])
    assert result.code == 2
    assert "downgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_baseline_adopts_a_database_migrated_by_plain_alembic(project: Project) -> None:
    # staging migrated by something else entirely: alembic_version only, no ledger
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging").code == 0
    assert project.run("migrate", "prod", "--approve", "--to", SHIPPED[1]).code == 0
    engine = project.engine("staging")
    with engine.begin() as connection:
        import sqlalchemy as sa

        connection.execute(sa.text("DROP TABLE orchestrator_ledger"))
    engine.dispose()
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3
    assert "not recorded in staging's ledger" in refused.stderr

    adopted = project.run("baseline", "staging", "--revision", HEAD, "--reason", "adopt legacy")
    assert adopted.code == 0, adopted.stderr
    assert project.run("migrate", "prod", "--approve").code == 0
    assert project.version("prod") == [HEAD]


def test_rollout_stops_at_the_first_failing_environment(project: Project) -> None:
    project.add_revision("f00000000001", HEAD, "op.execute('SELECT * FROM no_such_table')")
    result = project.run(
        "rollout", "--through", "prod", "--approve", "--to", "f00000000001", "--lock-timeout", "5"
    )
    assert result.code == 1
    assert "f00000000001" in result.stderr
    assert project.version("dev") == [HEAD]
    assert project.version("staging") == []
    assert project.version("prod") == []  # never reached


def test_rollout_checks_every_environment_before_touching_any(project: Project) -> None:
    del project.urls["prod"]
    result = project.run("rollout", "--through", "prod", "--approve")
    assert result.code == 2 and "PROD_DATABASE_URL" in result.stderr
    assert project.version("dev") == []


def test_two_heads_make_head_ambiguous(project: Project) -> None:
    project.add_revision("b00000000001", SHIPPED[2], "pass")
    result = project.run("migrate", "dev")
    assert result.code == 2
    assert "b00000000001" in result.stderr and HEAD in result.stderr
    assert "merge" in result.stderr
    assert project.version("dev") == []
