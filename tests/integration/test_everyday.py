"""Everyday use (SPEC Part 2): what a person or a script meets on the first day."""

from __future__ import annotations

import json

from projectkit import HEAD, SHIPPED, Project
from terminal import Terminal

# -- --json always prints a result --------------------------------------------------------------


def test_json_refusal_prints_the_refused_result(sqlite_project: Project) -> None:
    for env in ("dev", "staging"):
        assert sqlite_project.run("migrate", env).code == 0
    refused = sqlite_project.run("migrate", "prod", "--json")
    assert refused.code == 3
    (result,) = refused.json()
    assert result["outcome"] == "refused" and result["exit_code"] == 3
    assert result["env"] == "prod" and result["run_id"]
    assert "requires approval" in result["message"]
    assert sqlite_project.version("prod") == []


def test_json_gate_refusal_and_usage_errors_print_an_object(sqlite_project: Project) -> None:
    assert sqlite_project.run("migrate", "dev").code == 0
    gate = sqlite_project.run("migrate", "prod", "--approve", "--json")
    assert gate.code == 3
    (result,) = gate.json()
    assert result["outcome"] == "refused" and "not run on staging" in result["message"]

    unknown = sqlite_project.run("migrate", "nope", "--json")
    assert unknown.code == 2
    assert unknown.json() == {
        "outcome": "error",
        "message": "Unknown environment 'nope'. Known environments: dev, staging, prod.",
        "exit_code": 2,
    }
    missing = sqlite_project.run("plan", "staging", "--json", STAGING_DATABASE_URL="")
    assert missing.code == 2
    assert missing.json()["outcome"] == "error"
    assert "STAGING_DATABASE_URL" in missing.json()["message"]

    bad_usage = sqlite_project.run("--json", "migrate")  # argparse's own mistake
    assert bad_usage.code == 2
    assert bad_usage.json()["exit_code"] == 2 and "ENV" in bad_usage.json()["message"]
    assert "usage:" in bad_usage.stderr

    # a mistake found once a database was reached: that database's result
    bad_rev = sqlite_project.run("downgrade", "dev", "--to", "zzz", "--reason", "x", "--json")
    assert bad_rev.code == 2
    (result,) = bad_rev.json()
    assert result["target"] == "dev" and result["outcome"] == "error"
    assert "zzz" in result["message"] and result["exit_code"] == 2


def test_json_failure_names_the_revision_and_what_stayed_applied(sqlite_project: Project) -> None:
    sqlite_project.add_revision("f00000000001", HEAD, "op.execute('SELECT * FROM nowhere')")
    failed = sqlite_project.run("migrate", "dev", "--json")
    assert failed.code == 1
    (result,) = failed.json()
    assert result["outcome"] == "failed" and result["exit_code"] == 1
    assert "f00000000001" in result["message"] and result["applied"] == SHIPPED


# -- rollout asks every approval before running anything -----------------------------------------


def test_rollout_without_approve_migrates_nothing(sqlite_project: Project) -> None:
    refused = sqlite_project.run("rollout", "--through", "prod", "--json")
    assert refused.code == 3, refused.stderr
    assert "requires approval" in refused.stderr
    (result,) = refused.json()
    assert result["env"] == "prod" and result["outcome"] == "refused"
    for env in ("dev", "staging", "prod"):
        assert sqlite_project.version(env) == [], env
    assert [e["event"] for e in sqlite_project.audit_events("prod")] == [
        "run.started",
        "run.refused",
    ]
    # with --approve, the same rollout goes through and says what each environment did
    done = sqlite_project.run("rollout", "--through", "prod", "--approve", "--json")
    assert done.code == 0, done.stderr
    assert [(r["env"], r["applied"]) for r in done.json()] == [
        ("dev", SHIPPED),
        ("staging", SHIPPED),
        ("prod", SHIPPED),
    ]


def test_rollout_on_a_terminal_asks_for_prod_first_and_lists_what_it_will_run(
    sqlite_project: Project,
) -> None:
    term = Terminal(sqlite_project, ["rollout", "--through", "prod"])
    shown = term.expect("Type its name")
    # asked before anything ran, with the revisions prod would get
    assert sqlite_project.version("dev") == [] and sqlite_project.version("staging") == []
    assert "prod: about to apply 5 revision(s)" in shown
    assert "c7e2f5a8d903  add users.display_name" in shown
    term.send("prod")
    assert term.finish() == 0, term.seen
    for env in ("dev", "staging", "prod"):
        assert sqlite_project.version(env) == [HEAD], env
    ended = [e for e in sqlite_project.audit_events("prod") if e["event"] == "run.succeeded"]
    assert ended[-1]["approval"] == "typed"


def test_rollout_refused_on_the_terminal_runs_nothing(sqlite_project: Project) -> None:
    term = Terminal(sqlite_project, ["rollout", "--through", "prod"])
    term.expect("Type its name")
    term.send("staging")
    assert term.finish() == 3
    assert "does not match" in term.seen
    for env in ("dev", "staging", "prod"):
        assert sqlite_project.version(env) == [], env


def test_the_approval_prompt_lists_the_revisions(sqlite_project: Project) -> None:
    for env in ("dev", "staging"):
        assert sqlite_project.run("migrate", env, "--to", SHIPPED[1]).code == 0
    term = Terminal(sqlite_project, ["migrate", "prod", "--to", SHIPPED[1]])
    shown = term.expect("Type its name")
    assert "prod: about to apply 2 revision(s)" in shown
    assert f"{SHIPPED[0]}  create user" in shown and SHIPPED[2] not in shown
    term.send("prod")
    assert term.finish() == 0
    assert sqlite_project.version("prod") == [SHIPPED[1]]


def test_json_result_is_one_document(sqlite_project: Project) -> None:
    done = sqlite_project.run("migrate", "dev", "--json")
    assert done.code == 0
    assert json.loads(done.stdout)[0]["applied"] == SHIPPED
