"""The daily path (issue 35): a data migration that reads rows, from dev through staging to a
prod whose lint refuses what it cannot render; the waiver the refusal prints is pasted into
prod's environment file and prod runs, with no edit of the revision file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from projectkit import HEAD, Project, make_project

DATA = "da7a00000001"

READS_ROWS = """
    rows = op.get_bind().execute(sa.text("SELECT id, name FROM users")).fetchall()
    for row_id, name in rows:
        op.execute(
            sa.text("UPDATE users SET name = :name WHERE id = :id").bindparams(
                name=name.strip(), id=row_id
            )
        )
"""


@pytest.fixture
def story(tmp_path: Path, pg_url_factory: Callable[[], str]) -> Project:
    urls = {
        "dev": f"sqlite:///{tmp_path / 'dev.db'}",
        "staging": pg_url_factory(),
        "prod": pg_url_factory(),
    }
    project = make_project(tmp_path / "project", urls)
    project.add_revision(DATA, HEAD, READS_ROWS, doc="trim user names")
    return project


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        event = json.loads(line)
        if event.get("event") == name:
            found.append(event)
    return found


def paste_under_policy(env_file: Path, message: str) -> None:
    """What a person does with the refusal: copy the lines it prints under `policy:`."""
    head = f"add to environments/{env_file.stem}.yaml, under `policy:`:\n"
    assert head in message, message
    lines = []
    for line in message.split(head, 1)[1].splitlines():
        if not line.startswith("  "):
            break
        lines.append(line)
    text = env_file.read_text()
    env_file.write_text(text.replace("policy:\n", "policy:\n" + "\n".join(lines) + "\n", 1))


def test_a_data_migration_reaches_a_strict_prod_by_a_waiver_in_prods_file(story: Project) -> None:
    project = story
    revision_file = project.versions / f"{DATA}_test.py"
    before = revision_file.read_bytes()

    # dev (lint: warn): the finding with its reason, and prod's refusal said now, with the
    # lines that waive it there
    dev = project.run("migrate", "dev")
    assert dev.code == 0, dev.stderr
    (finding,) = [e for e in events(dev.stderr, "lint.finding") if e["revision"] == DATA]
    assert finding["rule"] == "unlintable"
    assert "reads rows" in finding["message"] and "fetchall" in finding["message"]
    (later,) = events(dev.stderr, "lint.refused_later")
    assert later["refused_on"] == "prod" and later["findings"] == [f"{DATA}:unlintable"]
    assert f'  lint_waivers:\n    "{DATA}": [unlintable]' in later["message"]
    assert "environments/prod.yaml" in later["message"]

    # `plan staging` says the same, and its last line is one verdict
    plan = project.run("plan", "staging", "--log-format", "console")
    assert plan.code == 0, plan.output
    assert f'"{DATA}": [unlintable]' in plan.stdout and "prod (lint: error)" in plan.stdout
    assert project.run("migrate", "staging").code == 0

    # prod (lint: error): `plan` and `migrate` refuse with the same lines to add
    plan = project.run("plan", "prod")
    assert plan.code == 3, plan.output
    last = plan.stdout.strip().splitlines()[-1]
    assert last.startswith("=> REFUSED by lint: 1 finding(s) in 1 revision(s)")
    assert "before any environment runs it" not in plan.stdout
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.output
    message = events(refused.stderr, "run.refused")[-1]["error"]
    waiver = f'  lint_waivers:\n    "{DATA}": [unlintable]'
    assert waiver in message and waiver in plan.stdout
    assert "# orchestrator: allow" not in message  # staging ran the file: never edit it
    assert project.version("prod") == []

    # the reviewed waiver goes into prod's file; prod runs; the file is untouched
    paste_under_policy(project.path / "environments" / "prod.yaml", message)
    assert project.run("envs").code == 0
    done = project.run("migrate", "prod", "--approve")
    assert done.code == 0, done.output
    assert project.version("prod") == [DATA]
    assert revision_file.read_bytes() == before
    started = project.audit_events("prod")[-1]
    assert f"{DATA}:unlintable" in started["waivers"]
    # staging's file is not prod's: staging still warns, it waived nothing
    staging = project.audit_events("staging")[-1]
    assert f"{DATA}:unlintable" not in staging.get("waivers", [])
    assert f"{DATA}:unlintable" in staging["lint_findings"]


def test_a_rule_squawk_does_not_know_is_a_configuration_error(story: Project) -> None:
    prod = story.path / "environments" / "prod.yaml"
    prod.write_text(prod.read_text().replace("policy:\n", "policy:\n  lint_exclude: [x-rule]\n"))
    for args in (["envs"], ["migrate", "prod", "--approve"]):
        result = story.run(*args)
        assert result.code == 2, result.output
        assert "x-rule" in result.output and "prod.yaml" in result.output
        assert "Traceback" not in result.output


# -- no password anywhere, whatever way the URL came in ----------------------------------------

RAW_AT = "postgresql+psycopg://app:p@ss%w0rd@host.invalid/db"


@pytest.mark.parametrize(
    ("how", "args"),
    [
        ("variable", ["migrate", "staging"]),
        ("variable", ["status", "staging"]),
        ("dotenv", ["migrate", "staging"]),
        ("option", ["check", "--scratch-url", RAW_AT]),
    ],
)
def test_a_raw_at_in_a_password_is_never_shown(tmp_path: Path, how: str, args: list[str]) -> None:
    project = make_project(tmp_path / "project", {"dev": f"sqlite:///{tmp_path / 'dev.db'}"})
    env: dict[str, str] = {}
    if how == "variable":
        env["STAGING_DATABASE_URL"] = RAW_AT
    elif how == "dotenv":
        (project.path / ".env").write_text(f"STAGING_DATABASE_URL={RAW_AT}\n")
    for log_format in ("json", "console"):
        result = project.run(*args, "--log-format", log_format, **env)
        assert result.code in (1, 2), result.output
        assert "host.invalid" in result.output  # it did say which database it could not use
        for secret in ("p@ss", "ss%w0rd", "w0rd"):
            assert secret not in result.output, (how, args, result.output)
        assert "Traceback" not in result.output


# -- status as a health check ----------------------------------------------------------------


def test_status_exits_1_when_a_configured_database_cannot_be_read(pg_project: Project) -> None:
    assert pg_project.run("migrate", "dev").code == 0
    bad = "postgresql+psycopg://app@host.invalid/db"
    down = pg_project.run("status", STAGING_DATABASE_URL=bad)
    assert down.code == 1, down.output
    assert "unreachable" in down.stdout and "dev" in down.stdout  # printed what it could
    assert pg_project.run("status", "--json", STAGING_DATABASE_URL=bad).code == 1
    # an unset variable is "unconfigured": healthy, unless --strict
    unset = pg_project.run("status", PROD_DATABASE_URL="")
    assert unset.code == 0 and "unconfigured" in unset.stdout, unset.output
    assert pg_project.run("status", "--strict", PROD_DATABASE_URL="").code == 1
    assert pg_project.run("status", "--strict").code == 0


def test_status_labels_runs_that_changed_nothing_and_shows_one_in_progress(
    pg_project: Project,
) -> None:
    refused = pg_project.run("migrate", "prod")  # no --approve
    assert refused.code == 3
    rows = {r["env"]: r for r in pg_project.run("status", "--json").json()}
    assert rows["prod"]["last_run"]["untouched"] == "refused"
    assert "refused (nothing changed)" in pg_project.run("status", "prod").stdout

    pg_project.add_revision("510e00000009", HEAD, 'op.execute("SELECT pg_sleep(30)")')
    proc = pg_project.popen("migrate", "dev")
    try:
        deadline = time.monotonic() + 60
        while True:
            shown = pg_project.run("status", "dev")
            if "running since" in shown.stdout:
                break
            assert time.monotonic() < deadline and proc.poll() is None, shown.output
            time.sleep(0.5)
        (row,) = pg_project.run("status", "dev", "--json").json()
        assert [r["actor"] for r in row["in_progress"]] == ["tester"]
    finally:
        proc.kill()
        proc.wait()


# -- plan approve ------------------------------------------------------------------------------


def test_without_an_approver_list_any_approval_is_recorded_and_show_says_so(
    pg_project: Project,
) -> None:
    project = pg_project
    assert project.run("migrate", "dev").code == 0
    assert project.run("migrate", "staging").code == 0
    plan = project.path / "plan.json"
    assert project.run("plan", "prod", "--out", str(plan)).code == 0
    key = project.path / "secrets" / "anyone.key"
    assert project.run("keys", "generate", "anyone", "--private-key-out", str(key)).code == 0
    done = project.run("plan", "approve", str(plan), "--key-env", "ANY_KEY", ANY_KEY=str(key))
    assert done.code == 0 and "approved" in done.stdout, done.output
    shown = project.run("plan", "show", str(plan))
    assert "1 signature(s); no approver list applies" in shown.stdout, shown.output


# -- smaller things of the daily path ----------------------------------------------------------


def test_actions_print_their_own_help_and_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", {})
    for args, own in (
        (["plan", "show", "--help"], "usage: orchestrator plan show FILE"),
        (["plan", "approve", "-h"], "usage: orchestrator plan approve FILE --key-env VAR"),
        (["audit", "report", "--help"], "usage: orchestrator audit report --out FILE.html"),
    ):
        shown = project.run(*args)
        assert shown.code == 0 and shown.stdout.startswith(own), shown.output
        assert "example:" in shown.stdout
    assert "--out FILE" in project.run("migrate", "--help").stdout
    out = project.run("migrate", "dev", "--out", "plan.json")
    assert out.code == 2 and "orchestrator plan dev --out plan.json" in out.stderr
    proc = project.popen("envs", "--json")
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head` that already left
    assert proc.wait(60) == 141
    assert "Traceback" not in proc.stderr.read()


# -- the developer's own database and the gate ---------------------------------------------------


def test_staging_is_the_first_gated_environment_when_dev_is_a_developers_own_file(
    pg_project: Project,
) -> None:
    """In a pipeline there is no dev database: DEV_DATABASE_URL unset, or the empty string
    GitHub gives for a missing secret. Staging then runs ungated, saying so; prod is gated
    by staging. A shared dev database (the variable set) gates staging as before."""
    project = pg_project
    gated = project.run("plan", "staging")
    assert gated.code == 3 and "not run on dev" in gated.stdout, gated.output
    for unset in ("", None):
        env = {"DEV_DATABASE_URL": unset} if unset is not None else {}
        environ = project.environ(**env)
        if unset is None:
            environ.pop("DEV_DATABASE_URL")
        plan = subprocess_run(project, environ, "plan", "staging")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "not gated: dev is each developer's own database" in plan.stdout
    done = project.run("migrate", "staging", DEV_DATABASE_URL="")
    assert done.code == 0, done.output
    (passed,) = [e for e in project.audit_events("staging") if e["event"] == "gate.passed"]
    assert "DEV_DATABASE_URL unset" in passed["not_gated"]
    assert project.version("dev") == []  # nothing ran there, nobody read it
    # prod is gated by staging, with or without dev
    assert project.run("plan", "prod", DEV_DATABASE_URL="").code == 0


def subprocess_run(project: Project, environ: dict[str, str], *args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=project.path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
