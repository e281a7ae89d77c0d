"""Everyday use and every bad input a user can type (SPEC "Commands", exit codes)."""

from __future__ import annotations

import pytest
from projectkit import HEAD, SHIPPED, Project


def assert_usage_error(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_envs_lists_the_chain_in_promotion_order_without_any_url(sqlite_project: Project) -> None:
    result = sqlite_project.run("envs", "--json", DEV_DATABASE_URL="", STAGING_DATABASE_URL="")
    assert result.code == 0, result.stderr
    assert [e["name"] for e in result.json()] == ["dev", "staging", "prod"]
    assert result.json()[2]["promotes_from"] == "staging"


def test_options_may_stand_before_or_after_the_command(sqlite_project: Project) -> None:
    assert (
        sqlite_project.run("--json", "envs").json() == sqlite_project.run("envs", "--json").json()
    )


def test_migrate_status_current_history_on_sqlite(sqlite_project: Project) -> None:
    assert sqlite_project.run("migrate", "dev", "--to", SHIPPED[1]).code == 0
    status = {r["env"]: r for r in sqlite_project.run("status", "--json").json()}
    assert status["dev"]["current"] == [SHIPPED[1]]
    assert status["dev"]["pending"] == SHIPPED[2:]
    assert status["dev"]["last_run"]["outcome"] == "succeeded"
    assert sqlite_project.run("migrate", "dev").code == 0
    assert sqlite_project.run("current", "dev", "--json").json()[0]["current"] == [HEAD]
    history = sqlite_project.run("history", "--json").json()
    assert [h["revision"] for h in history] == SHIPPED[::-1]
    again = sqlite_project.run("migrate", "dev", "--json")
    assert again.code == 0 and again.json()[0]["applied"] == []


def test_status_shows_an_environment_without_url_as_unconfigured(sqlite_project: Project) -> None:
    del sqlite_project.urls["prod"]
    result = sqlite_project.run("status", "--json")
    assert result.code == 0, result.stderr
    prod = {r["env"]: r for r in result.json()}["prod"]
    assert prod["configured"] is False and "PROD_DATABASE_URL" in prod["error"]


def test_malformed_yaml_names_file_and_line(sqlite_project: Project) -> None:
    sqlite_project.write_env("staging", "name: staging\ndatabase:\n  url_env: X\n   bad: [\n")
    assert_usage_error(sqlite_project.run("envs"), "staging.yaml", "line 4")


def test_unknown_key_names_key_and_file(sqlite_project: Project) -> None:
    sqlite_project.write_env(
        "prod",
        """\
        name: prod
        promotes_from: staging
        database: {url_env: PROD_DATABASE_URL}
        policy: {requre_approval: true}
        """,
    )
    assert_usage_error(sqlite_project.run("status"), "prod.yaml", "policy.requre_approval")


def test_unknown_environment_lists_the_known_ones(sqlite_project: Project) -> None:
    assert_usage_error(sqlite_project.run("migrate", "qa"), "'qa'", "dev, staging, prod")


def test_missing_url_variable_is_named(sqlite_project: Project) -> None:
    del sqlite_project.urls["staging"]
    assert_usage_error(sqlite_project.run("migrate", "staging"), "STAGING_DATABASE_URL")


def test_unknown_revision(sqlite_project: Project) -> None:
    assert_usage_error(sqlite_project.run("migrate", "dev", "--to", "deadbeef0000"), "deadbeef0000")
    assert sqlite_project.version("dev") == []


def test_promotes_from_cycle_and_unknown_name(sqlite_project: Project) -> None:
    sqlite_project.write_env("dev", "name: dev\npromotes_from: prod\ndatabase: {url_env: D}\n")
    assert_usage_error(sqlite_project.run("envs"), "cycle")
    sqlite_project.write_env("dev", "name: dev\npromotes_from: nowhere\ndatabase: {url_env: D}\n")
    assert_usage_error(sqlite_project.run("envs"), "nowhere")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter22@localhost/db",
        "postgresql://u@localhost/db?password=hunter22",
        "postgresql://u@localhost/db?sslmode=require&sslpassword=hunter22",
    ],
)
def test_a_password_in_yaml_is_refused(sqlite_project: Project, url: str) -> None:
    sqlite_project.write_env("staging", f"name: staging\ndatabase: {{url: '{url}'}}\n")
    result = sqlite_project.run("envs")
    assert_usage_error(result, "password")
    assert "hunter22" not in result.output


def test_name_must_match_the_file(sqlite_project: Project) -> None:
    sqlite_project.write_env("staging", "name: stage\ndatabase: {url_env: S}\n")
    assert_usage_error(sqlite_project.run("envs"), "staging.yaml", "stem")


@pytest.mark.parametrize("backend", ["sqlite", "pg"])
def test_plain_alembic_commands_work_and_write_the_ledger(
    backend: str, request: pytest.FixtureRequest
) -> None:
    project: Project = request.getfixturevalue(f"{backend}_project")
    # plain alembic gets the gate too: staging may not run what dev has not
    up = project.alembic("-x", "env=staging", "upgrade", "head")
    assert up.code != 0 and "not run on dev" in up.output
    assert project.version("staging") == []
    assert project.alembic("upgrade", "head").code == 0  # dev by default
    assert project.version("dev") == [HEAD]
    assert [r for r, d in project.ledger("dev")] == SHIPPED
    assert project.alembic("downgrade", "-1").code == 0
    assert project.version("dev") == [SHIPPED[-2]]
    assert project.ledger("dev")[-1] == (HEAD, "down")
    current = project.alembic("current")
    assert current.code == 0 and SHIPPED[-2] in current.stdout
    history = project.alembic("history")
    assert history.code == 0 and "create user" in history.stdout
    # and through a variable instead of -x
    refused = project.alembic("upgrade", "head", ORCHESTRATOR_ENV="staging")
    assert refused.code != 0 and "Refused" in refused.output
    assert project.alembic("upgrade", "head").code == 0
    assert project.alembic("upgrade", "head", ORCHESTRATOR_ENV="staging").code == 0
    assert project.version("staging") == [HEAD]


def test_autogenerate_finds_no_changes_when_models_match(sqlite_project: Project) -> None:
    assert sqlite_project.alembic("upgrade", "head").code == 0
    result = sqlite_project.alembic("revision", "--autogenerate", "-m", "nothing")
    assert result.code == 0, result.output
    created = [p for p in sqlite_project.versions.glob("*_nothing.py")]
    assert len(created) == 1
    body = created[0].read_text()
    assert "op." not in body.split("def upgrade")[1].split("def downgrade")[0]


def test_plain_alembic_keeps_production_policies(sqlite_project: Project) -> None:
    for env in ("dev", "staging"):
        assert sqlite_project.alembic("-x", f"env={env}", "upgrade", "head").code == 0
    refused = sqlite_project.alembic("-x", "env=prod", "upgrade", "head")
    assert refused.code != 0 and "requires approval" in refused.output
    assert sqlite_project.version("prod") == []
    approved = sqlite_project.alembic("-x", "env=prod", "-x", "approve=yes", "upgrade", "head")
    assert approved.code == 0, approved.output
    assert sqlite_project.version("prod") == [HEAD]
    down = sqlite_project.alembic("-x", "env=prod", "-x", "approve=yes", "downgrade", "-1")
    assert down.code != 0 and "downgrades are not allowed on prod" in down.output
    assert sqlite_project.version("prod") == [HEAD]
    events = [e["event"] for e in sqlite_project.audit_events("prod")]
    assert events.count("run.refused") == 2 and "migration.applied" in events
