"""Everyday use (SPEC Part 2): what a person or a script meets on the first day."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from projectkit import HEAD, REPO, SHIPPED, Project
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


# -- plan's last line names the blocker -----------------------------------------------------------

NEW = "f00000000001"
RULE = "require-concurrent-index-creation"
PLAIN_INDEX = 'op.create_index("ix_users_name", "users", ["name"])'


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_plan_names_the_gate_approval_or_nothing_to_do(sqlite_project: Project) -> None:
    gate = sqlite_project.run("plan", "prod")
    assert gate.code == 3
    assert last_line(gate.stdout).startswith("=> REFUSED by the gate: 5 of 5 revision(s)")
    assert "not run on staging" in last_line(gate.stdout)
    assert "approve" not in last_line(gate.stdout)
    assert sqlite_project.run("plan", "prod", "--json").json()["blocker"] == "gate"

    assert sqlite_project.run("rollout", "--through", "staging").code == 0
    approval = sqlite_project.run("plan", "prod")
    assert approval.code == 0
    assert last_line(approval.stdout) == (
        "=> would run 5 revision(s) once approved: prod requires --approve "
        "(or its name typed on a terminal)"
    )
    assert sqlite_project.run("plan", "prod", "--json").json()["blocker"] == "approval"

    assert sqlite_project.run("migrate", "prod", "--approve").code == 0
    nothing = sqlite_project.run("plan", "prod")
    assert nothing.code == 0
    assert last_line(nothing.stdout) == "=> nothing to do: prod is at the target"
    as_json = sqlite_project.run("plan", "prod", "--json").json()
    assert as_json["blocker"] is None and as_json["steps"] == []


def test_plan_shows_a_lint_refusal_on_the_step_and_on_the_last_line(
    sqlite_project: Project,
) -> None:
    sqlite_project.add_revision(NEW, HEAD, PLAIN_INDEX, doc="index users.name")
    assert sqlite_project.run("rollout", "--through", "staging").code == 0
    plan = sqlite_project.run("plan", "prod")
    assert plan.code == 3, plan.output
    step = next(line for line in plan.stdout.splitlines() if line.startswith(NEW))
    assert "blocked" in step and f"lint: {RULE}" in step
    # one verdict line: the findings are on the steps (and the waiver lines above it)
    assert last_line(plan.stdout).startswith("=> REFUSED by lint: 1 finding(s) in 1 revision(s)")
    as_json = sqlite_project.run("plan", "prod", "--json").json()
    assert as_json["blocker"] == "lint" and as_json["would_refuse"] is True
    (new_step,) = [s for s in as_json["steps"] if s["revision"] == NEW]
    assert new_step["verdict"] == "blocked" and RULE in new_step["reason"]

    # item 10: staging ran it, so the refusal does not advise editing the file
    refused = sqlite_project.run("migrate", "prod", "--approve", "--json")
    assert refused.code == 3
    message = refused.json()[0]["message"]
    # the way on that needs no edit: prod's own waiver for this revision, printed verbatim
    assert f'  lint_waivers:\n    "{NEW}": [{RULE}]' in message
    assert "staging has run these files: do not edit them" in message
    assert sqlite_project.version("prod") == []


def test_plan_names_checksum_drift(sqlite_project: Project) -> None:
    assert sqlite_project.run("migrate", "dev").code == 0
    path = next(sqlite_project.versions.glob(f"{SHIPPED[1]}_*.py"))
    path.write_text(path.read_text() + "\n# edited\n")
    plan = sqlite_project.run("plan", "dev", "--to", "head")
    assert plan.code == 3
    assert last_line(plan.stdout).startswith(f"=> REFUSED (checksum drift): {SHIPPED[1]} changed")


def test_plan_table_is_aligned_and_coloured_only_on_a_terminal(sqlite_project: Project) -> None:
    import re

    term = Terminal(sqlite_project, ["plan", "prod"])
    assert term.finish() == 3
    assert "\x1b[" in term.seen  # colour on a terminal
    plain = re.sub(r"\x1b\[[0-9;]*m", "", term.seen)
    lines = plain.splitlines()
    header = next(line for line in lines if line.startswith("REVISION"))
    row = next(line for line in lines if line.startswith(SHIPPED[0]))
    assert header.index("WHAT / WHY") == row.index("not run on staging")
    assert header.index("VERDICT") == row.index("blocked")

    no_color = Terminal(sqlite_project, ["plan", "prod"], NO_COLOR="1")
    assert no_color.finish() == 3
    assert "\x1b[" not in no_color.seen and "REFUSED by the gate" in no_color.seen


# -- what each command says -----------------------------------------------------------------------


def test_downgrade_says_reverted_and_baseline_says_recorded(sqlite_project: Project) -> None:
    assert sqlite_project.run("migrate", "dev").code == 0
    down = sqlite_project.run("downgrade", "dev", "--to", "-1", "--reason", "rework")
    assert down.code == 0
    assert down.stdout.startswith(f"dev: succeeded, reverted 1: {HEAD}")
    assert "applied" not in down.stdout

    sqlite_project.alembic("-x", "env=staging", "upgrade", SHIPPED[2])  # plain alembic...
    staging = sqlite_project.engine("staging")
    with staging.begin() as connection:  # ...then forget the orchestrator ever saw it
        connection.exec_driver_sql("DELETE FROM orchestrator_ledger")
    staging.dispose()
    base = sqlite_project.run("baseline", "staging", "--revision", SHIPPED[2], "--reason", "adopt")
    assert base.code == 0, base.stderr
    assert base.stdout.startswith(f"staging: succeeded, recorded 3: {SHIPPED[0]}")


def test_status_shows_an_error_whole_wrapped_between_words(sqlite_project: Project) -> None:
    status = sqlite_project.run("status", STAGING_DATABASE_URL="")
    assert status.code == 0
    below = status.stdout.split("\n", 4)[-1]  # after the table
    assert "STAGING_DATABASE_URL" in below
    words = " ".join(below.split())
    assert "reads its database URL from the variable STAGING_DATABASE_URL, which is not set" in (
        words
    )


def test_a_postgres_scheme_url_is_accepted(sqlite_project: Project, pg_db: str) -> None:
    heroku_style = pg_db.replace("postgresql+psycopg://", "postgres://")
    assert heroku_style.startswith("postgres://")
    done = sqlite_project.run("migrate", "staging", STAGING_DATABASE_URL=heroku_style)
    assert done.code == 3  # the gate, not "Can't load plugin"
    assert "Can't load plugin" not in done.output
    assert sqlite_project.run("migrate", "dev").code == 0
    done = sqlite_project.run("migrate", "staging", STAGING_DATABASE_URL=heroku_style)
    assert done.code == 0, done.stderr
    sqlite_project.urls["staging"] = pg_db
    assert sqlite_project.version("staging") == [HEAD]


def _run_in(project: Project, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = project.environ()
    env.pop("ORCHESTRATOR_PROJECT_DIR")
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_a_sub_directory_finds_the_project(sqlite_project: Project, tmp_path: Path) -> None:
    inside = sqlite_project.path / "alembic" / "versions"
    done = _run_in(sqlite_project, inside, "migrate", "dev")
    assert done.returncode == 0, done.stderr
    assert sqlite_project.version("dev") == [HEAD]
    assert not (inside / ".orchestrator").exists()  # dev's SQLite file stays in the project

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = _run_in(sqlite_project, elsewhere, "status")
    assert lost.returncode == 2
    assert str(elsewhere / "environments") in lost.stderr
    assert "ORCHESTRATOR_PROJECT_DIR" in lost.stderr and "Traceback" not in lost.stderr


# -- the README, followed top to bottom ------------------------------------------------------------


def readme_block(after: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index(after) :].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_first_steps_work_as_written(sqlite_project: Project) -> None:
    readme = (REPO / "README.md").read_text()
    for told in ("source .venv/bin/activate", ".venv/bin/orchestrator", ".venv/bin/alembic"):
        assert told in readme
    assert "alembic -x env=staging upgrade head" in readme
    assert 'eval "$(register-python-argcomplete orchestrator)"' in readme

    env = sqlite_project.environ()
    for name in ("ORCHESTRATOR_PROJECT_DIR", "DEV_DATABASE_URL"):
        env.pop(name)
    for name in ("STAGING_DATABASE_URL", "PROD_DATABASE_URL"):
        env.pop(name)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # as after `activate`
    for line in readme_block("**The release story**") + readme_block("`-x` goes **before**"):
        want = 3 if "exit 3" in line else 0
        done = subprocess.run(
            [
                "bash",
                "-c",
                f"export STAGING_DATABASE_URL=sqlite:///.orchestrator/staging.db "
                f"PROD_DATABASE_URL=sqlite:///.orchestrator/prod.db; {line}",
            ],
            cwd=sqlite_project.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == want, f"{line}\n{done.stdout}\n{done.stderr[-2000:]}"
    at = sqlite_project.path / ".orchestrator"
    sqlite_project.urls = {e: f"sqlite:///{at / e}.db" for e in ("dev", "staging", "prod")}
    assert sqlite_project.version("prod") == [HEAD]
    assert sqlite_project.version("dev") == [SHIPPED[-2]]  # the last line: downgrade -1
