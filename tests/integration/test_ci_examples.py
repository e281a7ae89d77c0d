"""The pipeline examples run as pasted (issue 35): each job's commands, taken from
examples/ci/, run in a checkout of the project with exactly the variables the job gives
them, against real PostgreSQL databases for staging and prod (no dev database: it is each
developer's own file). The staging job writes prod's plan and shows it for review; the prod
job, in another checkout, applies exactly that plan."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from projectkit import HEAD, REPO, Project, make_project

CI = REPO / "examples" / "ci"
BIN = Path(sys.executable).parent
TAG = "v1.2.0"
INSTALL = "pip install . -r requirements.txt"


def github_jobs(secrets: dict[str, str]) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Job -> (its environment, its shell scripts), GitHub's expressions filled in."""
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    context = {
        "github.actor": "ci-bot",
        "github.event.release.tag_name": TAG,
        "matrix.shard": "1",
    }

    def fill(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1).strip()
            if name.startswith("secrets."):
                return secrets.get(name.removeprefix("secrets."), "")  # missing: ""
            return context[name]

        return re.sub(r"\$\{\{([^}]*)\}\}", one, str(value))

    jobs = {}
    for name, job in workflow["jobs"].items():
        env = {k: fill(v) for k, v in {**workflow.get("env", {}), **job.get("env", {})}.items()}
        scripts = []
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), (name, step)  # values only via env:
            if "run" in step:
                scripts.append(fill(step["run"]))
            elif "upload-artifact" in step.get("uses", ""):
                scripts.append(f"#upload {step['with']['path']}")
            elif "download-artifact" in step.get("uses", ""):
                scripts.append("#download")
        jobs[name] = (env, scripts)
    return jobs


def gitlab_jobs(scoped: dict[str, dict[str, str]]) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Job -> (its variables, its script lines); `scoped`: the environment-scoped variables
    GitLab gives a job of that environment."""
    pipeline = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    provided = {"CI_COMMIT_TAG": TAG, "GITLAB_USER_LOGIN": "ci-bot"}
    jobs = {}
    for name, job in pipeline.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        env = {**provided, **scoped.get(job.get("environment", ""), {})}
        known = dict(env)  # `$NAME` in a job's variables: a variable GitLab gives it
        for key, value in {**pipeline.get("variables", {}), **job.get("variables", {})}.items():
            env[key] = expand(str(value), known)
        before = pipeline["default"]["before_script"]
        jobs[name] = (env, [*before, *job["script"]])
    return jobs


def expand(value: str, known: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: known.get(m.group(1), ""), value)


def run_job(checkout: Path, env: dict[str, str], scripts: list[str], artifacts: Path) -> str:
    """Run a job's scripts as the runner would (bash -e), with only its variables; the
    install line is checked, not run (the test's interpreter has the project installed)."""
    summary = checkout / "step-summary.md"
    base = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(checkout),
        "LANG": "C.UTF-8",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    log = []
    for script in scripts:
        if script == INSTALL:
            continue
        if script.startswith("#upload "):
            shutil.copy(checkout / script.split(" ", 1)[1], artifacts)
            continue
        if script == "#download":
            for item in artifacts.iterdir():
                shutil.copy(item, checkout)
            continue
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=checkout,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        log.append(done.stdout)
        assert done.returncode == 0, (script, done.stdout[-3000:], done.stderr[-3000:])
    return "".join(log)


@pytest.fixture
def databases(tmp_path: Path, pg_url_factory: Callable[[], str]) -> dict[str, str]:
    return {"staging": pg_url_factory(), "prod": pg_url_factory()}


def checkout(tmp_path: Path, name: str, urls: dict[str, str]) -> Project:
    """A fresh clone of the project for one job (requirements.txt included)."""
    project = make_project(tmp_path / name, urls)
    shutil.copy(REPO / "requirements.txt", project.path)
    return project


def assert_release(project: Project, summary: str | None) -> None:
    assert project.version("staging") == [HEAD] and project.version("prod") == [HEAD]
    events = project.audit_events("prod")
    started = next(e for e in events if e["event"] == "run.started")
    assert started.get("plan_sha256") and started["ticket"] == TAG
    assert started["actor"] == "ci-bot"
    if summary is not None:
        # the plan rendered as markdown, and the SQL in a fenced block (it renders)
        assert summary.startswith("## Release plan for prod")
        assert "\n```sql\n" in summary and "CREATE TABLE users" in summary
        assert summary.rstrip().endswith("```")


def test_the_github_workflow_runs_as_pasted(tmp_path: Path, databases: dict[str, str]) -> None:
    secrets = {
        "STAGING_DATABASE_URL": databases["staging"],
        "PROD_READONLY_DATABASE_URL": databases["prod"],
        "PROD_DATABASE_URL": databases["prod"],
        "STAGING_READONLY_DATABASE_URL": databases["staging"],
    }
    jobs = github_jobs(secrets)
    for name, (env, scripts) in jobs.items():
        assert INSTALL in scripts, name  # from the repository, with the app's requirements
        assert not any("DEV_DATABASE_URL" in k for k in env), name
    # exactly the variables each job's commands need
    assert {k for k in jobs["staging"][0] if k.endswith("_URL")} == {
        "STAGING_DATABASE_URL",
        "PROD_DATABASE_URL",
    }
    assert {k for k in jobs["prod"][0] if k.endswith("_URL")} == {
        "PROD_DATABASE_URL",
        "STAGING_DATABASE_URL",
    }
    assert not [k for k in jobs["check"][0] if k.endswith("_URL")]

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    run_job(checkout(tmp_path, "check", {}).path, *jobs["check"], artifacts)
    staging = checkout(tmp_path, "staging", databases)
    run_job(staging.path, *jobs["staging"], artifacts)
    assert (artifacts / "plan.json").exists()
    prod = checkout(tmp_path, "prod", databases)
    run_job(prod.path, *jobs["prod"], artifacts)
    assert_release(prod, (staging.path / "step-summary.md").read_text())


def test_the_gitlab_pipeline_runs_as_pasted(tmp_path: Path, databases: dict[str, str]) -> None:
    scoped = {
        "staging": {
            "STAGING_DATABASE_URL": databases["staging"],
            "PROD_READONLY_DATABASE_URL": databases["prod"],
        },
        "production": {
            "PROD_DATABASE_URL": databases["prod"],
            "STAGING_READONLY_DATABASE_URL": databases["staging"],
            "PROD_READONLY_DATABASE_URL": databases["prod"],
            "TENANTS_SERVER_URL": "postgresql+psycopg://unused@localhost/unused",
        },
    }
    jobs = gitlab_jobs(scoped)
    for name, (_env, scripts) in jobs.items():
        assert scripts[0] == INSTALL, name
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    run_job(checkout(tmp_path, "check", {}).path, *jobs["check"], artifacts)
    staging = checkout(tmp_path, "staging", databases)
    shown = run_job(staging.path, *jobs["staging"], artifacts)
    assert "Release plan for prod" in shown and "CREATE TABLE users" in shown  # in the log
    shutil.copy(staging.path / "plan.json", artifacts)  # `artifacts: paths: [plan.json]`
    prod = checkout(tmp_path, "prod", databases)
    env, scripts = jobs["prod"]
    run_job(prod.path, env, [*scripts[:1], "#download", *scripts[1:]], artifacts)
    assert_release(prod, None)


def test_each_job_needs_every_database_variable_it_has(
    tmp_path: Path, databases: dict[str, str]
) -> None:
    """Without its read-only prod URL the staging job cannot plan; without staging's, prod's
    gate cannot read what staging ran: no variable is there for nothing."""
    jobs = gitlab_jobs({"staging": {"STAGING_DATABASE_URL": databases["staging"]}})
    env, scripts = jobs["staging"]
    staging = checkout(tmp_path, "staging", databases)
    with pytest.raises(AssertionError, match="plan prod --out"):
        run_job(staging.path, env, scripts, tmp_path)
    assert staging.version("staging") == [HEAD]  # it migrated staging, then could not plan
