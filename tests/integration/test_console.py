"""Everyday use on a terminal and in a pipe: short event lines, progress as it happens,
--quiet, --version, help with examples, shell completion, a fleet's roll-up and stream."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from projectkit import HEAD, REPO, SHIPPED, Project
from terminal import Terminal

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SLOW = "f00000000002"


def plain(text: str) -> str:
    return ANSI.sub("", text)


# -- one short line per event on a terminal --------------------------------------------------


def test_a_terminal_gets_one_short_line_per_event_with_the_revision(
    sqlite_project: Project,
) -> None:
    term = Terminal(sqlite_project, ["migrate", "dev"])
    assert term.finish() == 0, term.seen
    assert "\x1b[" in term.seen  # coloured: a terminal, NO_COLOR unset
    lines = [line for line in plain(term.seen).splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 120, max(lines, key=len)
    applied = [line for line in lines if "migration.applied" in line]
    assert [line.split()[3] for line in applied] == SHIPPED  # time, event, env, revision
    assert any(f"{SHIPPED[3]} (4/5)" in line for line in lines)  # revision i of n
    assert not any("{" in line for line in lines)  # no JSON, no dict dumps
    assert not any("Running upgrade" in line for line in lines)  # our line says it, shorter
    assert lines[-1].startswith("dev: succeeded, applied 5")  # the result (stdout)


def test_no_color_is_honoured_on_a_terminal(sqlite_project: Project) -> None:
    term = Terminal(sqlite_project, ["migrate", "dev"], NO_COLOR="1")
    assert term.finish() == 0
    assert "\x1b[" not in term.seen and "migration.applied" in term.seen


def test_quiet_prints_only_the_result(sqlite_project: Project) -> None:
    term = Terminal(sqlite_project, ["migrate", "dev", "--quiet"])
    assert term.finish() == 0
    lines = [line for line in plain(term.seen).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dev: succeeded, applied 5"), lines
    refused = Terminal(sqlite_project, ["-q", "migrate", "prod", "--approve"])
    assert refused.finish() == 3
    lines = [line for line in plain(refused.seen).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Refused: prod may only run"), lines


def test_off_a_terminal_every_stderr_line_stays_json(sqlite_project: Project) -> None:
    done = sqlite_project.run("migrate", "dev", ORCHESTRATOR_LOG_FORMAT="auto")
    assert done.code == 0
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["event"] for e in events if e.get("run_id")][0] == "run.started"
    assert "migration.running" not in {e["event"] for e in events}  # no noise for fast ones


# -- a long revision shows progress while it runs, even piped ------------------------------------


def waiting_revision(
    project: Project, gate: Path, rev: str = SLOW, down: str | None = HEAD
) -> None:
    """A revision that runs until `gate` exists."""
    project.add_revision(
        rev,
        down,
        f"""\
        import os, time
        deadline = time.monotonic() + 120
        while not op.get_context().as_sql and not os.path.exists({str(gate)!r}):
            assert time.monotonic() < deadline  # (offline SQL for lint does not wait)
            time.sleep(0.05)
        """,
        doc="waits for the test",
    )


def test_a_long_revision_reports_progress_as_it_runs(
    sqlite_project: Project, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    waiting_revision(sqlite_project, gate)
    run = sqlite_project.popen(
        "migrate",
        "dev",
        "--json",
        ORCHESTRATOR_PROGRESS_SECONDS="0.2",
        ORCHESTRATOR_LOG_FORMAT="auto",
    )
    assert run.stderr is not None
    seen = []
    for line in run.stderr:  # piped: each line arrives as it is written, or this never ends
        event = json.loads(line)
        seen.append(event)
        if event["event"] == "migration.running" and event.get("elapsed_s", 0) >= 0.4:
            break
    assert run.poll() is None  # still inside the revision
    assert event["revision"] == SLOW and event["step"] == "6/6"
    assert {e["event"] for e in seen} >= {"run.started", "migration.applied"}
    assert "run.succeeded" not in {e["event"] for e in seen}
    gate.touch()
    out, rest = run.communicate(timeout=120)
    assert run.returncode == 0, rest
    assert json.loads(out)[0]["applied"] == [*SHIPPED, SLOW]
    assert sqlite_project.version("dev") == [SLOW]


def test_a_long_revision_ticks_on_the_terminal(sqlite_project: Project, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    waiting_revision(sqlite_project, gate)
    term = Terminal(sqlite_project, ["migrate", "dev"], ORCHESTRATOR_PROGRESS_SECONDS="0.2")
    term.expect(f"{SLOW} (6/6) waits for the test")
    term.expect("running for 1 s")
    gate.touch()
    assert term.finish() == 0
    assert "run.succeeded" in term.seen


# -- --version, help, completion ------------------------------------------------------------------


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
    )


def test_version_is_the_package_version() -> None:
    from importlib.metadata import version

    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"orchestrator {version('alembic-orchestrator')}"


def test_every_option_has_help_and_every_command_ends_with_an_example() -> None:
    import argparse

    from orchestrator.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub.choices) >= 12
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        text = command.format_help().rstrip().splitlines()
        assert text[-1].strip().startswith(f"orchestrator {name}") or any(
            line.strip().startswith(f"orchestrator {name}") for line in text[-3:]
        ), f"{name} --help does not end with an example"
        assert "example:" in command.format_help(), name


@pytest.mark.parametrize("command", ["migrate", "rollout", "downgrade", "check"])
def test_help_in_a_subprocess_ends_with_an_example(command: str) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0
    assert "example:" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].strip().startswith(f"orchestrator {command}")


def complete(line: str, tmp_path: Path) -> list[str]:
    out = tmp_path / "completions"
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": "\n",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "COMP_TYPE": "9",
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return sorted(c.strip() for c in out.read_text().split("\n") if c.strip())


def test_completion_of_commands_environments_and_options(tmp_path: Path) -> None:
    assert complete("orchestrator mi", tmp_path) == ["migrate"]
    assert {"dev", "prod", "staging", "--approve"} <= set(
        complete("orchestrator migrate ", tmp_path)
    )
    assert complete("orchestrator migrate st", tmp_path) == ["staging"]
    assert "--through" in complete("orchestrator rollout --th", tmp_path)
    assert complete("orchestrator plan prod --to 5c6", tmp_path) == [SHIPPED[0]]
    # never file names where a name is expected
    words = [w for w in complete("orchestrator plan ", tmp_path) if not w.startswith("-")]
    assert words == ["approve", "dev", "prod", "show", "staging"]
    assert complete("orchestrator audit --event run.re", tmp_path) == ["run.refused"]


# -- fleets: a compact plan, results as each database finishes -------------------------------------


@pytest.fixture
def fleet(sqlite_project: Project, tmp_path: Path) -> Project:
    sqlite_project.write_env(
        "staging",
        f"""\
        name: staging
        promotes_from: dev
        database:
          url: sqlite:///{tmp_path}/tenants/{{database}}.db
          databases: [a, b, c]
        policy:
          lint: off
        """,
    )
    return sqlite_project


def test_a_fleet_plan_is_a_roll_up(fleet: Project) -> None:
    plan = fleet.run("plan", "staging")
    assert plan.code == 3
    lines = plan.stdout.strip().splitlines()
    assert lines[0] == f"staging: fleet of 3 databases, to {HEAD}"
    assert "REVISION" not in plan.stdout  # no table per database
    assert lines[1].strip() == "3 at base, 5 revision(s), gate: a, b, c"
    assert lines[-1].startswith("=> REFUSED on 3 of 3 databases")
    assert fleet.run("migrate", "dev").code == 0
    plan = fleet.run("plan", "staging")
    assert plan.code == 0
    assert plan.stdout.strip().splitlines()[-1] == "=> would run 5 revision(s) on 3 of 3 databases"


def test_a_fleet_prints_each_database_as_it_finishes_even_piped(
    fleet: Project, tmp_path: Path
) -> None:
    gate = tmp_path / "go"
    fleet.add_revision(
        SLOW,
        HEAD,
        textwrap.dedent(f"""\
        import os, time
        if not op.get_context().as_sql and str(op.get_bind().engine.url).endswith("c.db"):
            deadline = time.monotonic() + 120
            while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:
                time.sleep(0.05)
        """),
    )
    assert fleet.run("migrate", "dev").code == 0
    run = fleet.popen("migrate", "staging")
    assert run.stdout is not None
    first = run.stdout.readline()  # arrives while c is still waiting: flushed per database
    second = run.stdout.readline()
    assert first.startswith("[1/3] staging/a: succeeded, applied 6")
    assert second.startswith("[2/3] staging/b: succeeded, applied 6")
    assert run.poll() is None
    gate.touch()
    rest, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert rest.startswith("[3/3] staging/c: succeeded, applied 6")
    assert len(rest.strip().splitlines()) == 1  # printed once, not again at the end
