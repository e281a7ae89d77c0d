"""What runs is what was hashed (SPEC Part 2): a revision's checksum covers the project
modules it imports, on real databases through the CLI."""

from __future__ import annotations

import pytest
from projectkit import HEAD, Project

HELPER_REV = "f0f0f0f0f0f0"


def add_helper_revision(project: Project) -> None:
    """A revision whose upgrade takes a table name from a project helper, two imports deep."""
    (project.path / "app" / "naming.py").write_text("from app.words import NAME\n")
    (project.path / "app" / "words.py").write_text('NAME = "audit_notes"\n')
    project.add_revision(
        HELPER_REV,
        HEAD,
        upgrade="""
        from app.naming import NAME

        op.create_table(NAME, sa.Column("id", sa.Integer, primary_key=True))
        """,
        downgrade='op.drop_table("audit_notes")',
    )


@pytest.fixture(params=["pg", "sqlite"])
def project(request: pytest.FixtureRequest) -> Project:
    return request.getfixturevalue(f"{request.param}_project")


def test_helper_edited_after_staging_ran_it_is_drift_and_refused(project: Project) -> None:
    add_helper_revision(project)
    for env in ("dev", "staging"):
        result = project.run("migrate", env)
        assert result.code == 0, result.stderr
    assert "audit_notes" in project.schema("staging")
    # the same checksum on both sides while nothing changes
    assert project.run("plan", "prod").code == 0

    # an edit two imports away from the revision
    (project.path / "app" / "words.py").write_text('NAME = "audit_notes"  # harmless?\n')

    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.output
    assert f"{HELPER_REV}: edited since staging ran it" in refused.stderr
    assert project.version("prod") == []
    promote = project.run("promote", "prod", "--approve")
    assert promote.code == 3
    assert f"{HELPER_REV}: edited since staging ran it" in promote.stderr

    status = project.run("status", "--json")
    assert status.code == 0, status.stderr
    rows = {r["env"]: r for r in status.json()}
    assert rows["staging"]["drift"] == [HELPER_REV]
    assert [b["revision"] for b in rows["prod"]["blocked"]] == [HELPER_REV]

    # an unrelated module of the project is no drift
    (project.path / "app" / "words.py").write_text('NAME = "audit_notes"\n')
    (project.path / "app" / "unrelated.py").write_text("X = 1\n")
    rows = {r["env"]: r for r in project.run("status", "--json").json()}
    assert rows["staging"]["drift"] == []
    assert project.run("migrate", "prod", "--approve").code == 0
    assert "audit_notes" in project.schema("prod")
