"""The Makefile as a newcomer uses it: exit codes pass through, mistakes are refused, the demo
keeps to its own databases, the benchmark leaves the committed results alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from projectkit import HEAD, REPO, SHIPPED, Project, make_project


@pytest.fixture
def repo_copy(tmp_path: Path) -> Project:
    """The project with its Makefile and scripts, sharing this checkout's virtualenv."""
    if not (REPO / ".venv" / "bin" / "orchestrator").exists():
        pytest.fail("run `make install` first: these tests drive make with the real .venv")
    urls = {env: f"sqlite:///{tmp_path}/{env}.db" for env in ("staging", "prod")}
    project = make_project(tmp_path / "repo", urls)
    for item in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / item, project.path / item)  # mtimes kept: no reinstall
    shutil.copytree(REPO / "scripts", project.path / "scripts")
    (project.path / ".venv").symlink_to(REPO / ".venv")
    return project


def make(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = project.environ(**env)
    environ.pop("ORCHESTRATOR_PROJECT_DIR")
    environ.pop("PYTHONPATH")
    return subprocess.run(  # -o: the shared .venv is installed; never reinstall it from here
        ["make", "--no-print-directory", "-o", ".venv/bin/orchestrator", *args],
        cwd=project.path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_plan_fails_after_the_orchestrators_message(repo_copy: Project) -> None:
    """make knows 0, 1 and 2: a refusal is make's 2, after the orchestrator's own message
    (pipelines call `orchestrator` itself for its codes)."""
    refused = make(repo_copy, "plan", "ENV=prod")
    assert "REFUSED by the gate" in refused.stdout
    assert refused.returncode == 2
    assert make(repo_copy, "migrate", "ENV=staging").returncode == 0  # dev is not gated here
    assert make(repo_copy, "plan", "ENV=dev").returncode == 0
    missing = make(repo_copy, "plan", "ENV=prod", PROD_DATABASE_URL="")
    assert missing.returncode == 2 and "PROD_DATABASE_URL" in missing.stderr


def test_make_revision_without_a_message_refuses(repo_copy: Project) -> None:
    before = sorted(repo_copy.versions.iterdir())
    done = make(repo_copy, "revision")
    assert done.returncode == 2
    assert 'make revision needs a message: make revision m="add orders"' in done.stderr
    assert sorted(repo_copy.versions.iterdir()) == before


def test_make_lint_and_bench_do_what_they_say(repo_copy: Project) -> None:
    lint = make(repo_copy, "-n", "lint")
    assert "ruff check" in lint.stdout and "mypy orchestrator" in lint.stdout
    bench = make(repo_copy, "-n", "bench")
    assert "bench/run.py" in bench.stdout and "bench/results.md" not in bench.stdout
    record = make(repo_copy, "-n", "bench-record")
    assert "BENCH_RESULTS=bench/results.md" in record.stdout


def test_make_demo_leaves_your_dev_database_alone(repo_copy: Project) -> None:
    mine = make(repo_copy, "migrate", "ENV=dev", f"REV={SHIPPED[0]}")
    assert mine.returncode == 0, mine.stderr
    yours = repo_copy.path / ".orchestrator" / "dev.db"
    repo_copy.urls["dev"] = f"sqlite:///{yours}"
    ledger = repo_copy.ledger("dev")

    demo = make(repo_copy, "demo")
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "Demo done" in demo.stdout
    assert repo_copy.version("dev") == [SHIPPED[0]]  # untouched
    assert repo_copy.ledger("dev") == ledger
    repo_copy.urls["dev"] = f"sqlite:///{repo_copy.path / '.orchestrator' / 'demo' / 'dev.db'}"
    assert repo_copy.version("dev") == [HEAD]
