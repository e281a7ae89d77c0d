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
