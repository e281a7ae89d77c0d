"""Audit review a person can read (SPEC Part 2): `audit report` opened in a real headless
Chromium over a history made by real runs on PostgreSQL (success, gate refusal, approval,
SIGKILL-interrupted run, downgrade, failure); `audit --format csv` against `--json`; the
terminal table against forged lines; the report's bad inputs."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, Page
from projectkit import HEAD, REPO, SHIPPED, Project

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / ".artifacts"))
SCRIPT_TICKET = "<script>alert(1)</script>"
SLOW_BODY = """
import os
if os.environ.get("TEST_SLOW_REVISION"):
    op.execute("SELECT pg_sleep(60)")
"""
SLOW_REV, OK_REV, FAIL_REV = "5105105105aa", "0c0ffee00001", "f00dfa11beef"


def run_ok(project: Project, code: int, *args: str, **env: str) -> dict[str, Any]:
    result = project.run(*args, "--json", **env)
    assert result.code == code, result.output
    found = result.json()
    return found[0] if isinstance(found, list) else found


def wait_for(what: str, predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def make_history(project: Project) -> dict[str, str]:
    """Real runs, each as a user would type it; returns the run ids the report must show."""
    ids = {}
    ids["first"] = run_ok(project, 0, "migrate", "dev", "--ticket", SCRIPT_TICKET)["run_id"]
    refused = project.run("migrate", "prod", "--approve")
    assert refused.code == 3, refused.output
    ids["staging"] = run_ok(project, 0, "promote", "staging", "--ticket", "CHG-7")["run_id"]
    ids["prod"] = run_ok(project, 0, "promote", "prod", "--approve", "--ticket", "CHG-8")["run_id"]

    # a run killed in the middle of a slow revision; the next run records it as interrupted
    project.add_revision(
        SLOW_REV,
        HEAD,
        SLOW_BODY,
    )
    runner = project.popen("migrate", "dev", TEST_SLOW_REVISION="1")
    try:
        wait_for(
            "the slow revision to run",
            lambda: project.query(
                "dev",
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"
                " AND application_name LIKE 'orchestrator%' AND datname = current_database()",
            ),
        )
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.wait(timeout=30)
    (killed,) = [e for e in project.audit_events("dev") if e.get("pid") == runner.pid]
    ids["killed"] = killed["run_id"]
    ids["rerun"] = run_ok(project, 0, "migrate", "dev")["run_id"]

    ids["downgrade"] = run_ok(
        project, 0, "downgrade", "dev", "--to", "-1", "--reason", "undo slow"
    )["run_id"]

    project.add_revision(
        OK_REV,
        SLOW_REV,
        'op.create_table("report_ok", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("report_ok")',
    )
    project.add_revision(FAIL_REV, OK_REV, 'op.execute("SELECT 1/0")')
    failed = project.run("migrate", "dev")
    assert failed.code == 1, failed.output
    ids["failed"] = [e for e in project.audit_events("dev") if e["event"] == "run.failed"][-1][
        "run_id"
    ]
    return ids


READ_MATRIX = """
Array.from(document.querySelectorAll('#matrix-table tr.rev')).map(tr => ({
  revision: tr.dataset.revision,
  agreement: tr.dataset.agreement,
  states: Object.fromEntries(Array.from(tr.querySelectorAll('td[data-env]'))
    .map(td => [td.dataset.env, td.dataset.state])),
  text: tr.innerText,
  hidden: tr.hidden,
}))
"""

READ_RUNS = """
Array.from(document.querySelectorAll('tr.run')).map(tr => ({
  run: tr.dataset.run, env: tr.dataset.env, outcome: tr.dataset.outcome,
  cells: Array.from(tr.cells).map(td => td.innerText.trim()),
  visible: tr.offsetParent !== null,
}))
"""


def runs_of(page: Page, env: str | None = None) -> list[dict[str, Any]]:
    return [r for r in page.evaluate(READ_RUNS) if env is None or r["env"] == env]


COLUMNS = [
    "start",
    "outcome",
    "command",
    "from_to",
    "actor",
    "ticket",
    "git_sha",
    "duration",
    "approval",
    "details",
]


def row(run: dict[str, Any]) -> dict[str, str]:
    return dict(zip(COLUMNS, run["cells"], strict=True))


def test_report_in_a_browser_tells_the_story_of_a_real_history(
    pg_project: Project, tmp_path: Path
) -> None:
    ids = make_history(pg_project)
    out = tmp_path / "report.html"
    result = pg_project.run("audit", "report", "--out", str(out))
    assert result.code == 0, result.output
    assert f"Report written to {out}" in result.stdout
    html = out.read_text(encoding="utf-8")
    assert SCRIPT_TICKET not in html

    with Browser() as browser:
        page = browser.open(out)
        assert page.errors == []
        assert page.evaluate("document.scripts.length") == 1  # the ticket is not a script
        assert page.dialogs == []
        page.screenshot(ARTIFACTS / "audit-report.png")

        # -- the revision x environment matrix
        matrix = {m["revision"]: m for m in page.evaluate(READ_MATRIX)}
        assert set(matrix) == {*SHIPPED, SLOW_REV, OK_REV}  # FAIL_REV never applied
        for rev in SHIPPED:
            assert matrix[rev]["states"] == {
                "dev": "applied",
                "staging": "applied",
                "prod": "applied",
            }
            assert matrix[rev]["agreement"] == "agree"
            assert "agree" in matrix[rev]["text"]
        # applied by the re-run, reverted by the downgrade, applied again before the failure
        assert matrix[SLOW_REV]["states"] == {"dev": "applied", "staging": "none", "prod": "none"}
        assert "reverted" in matrix[SLOW_REV]["text"] and "not run" in matrix[SLOW_REV]["text"]
        assert matrix[SLOW_REV]["agreement"] == "single"

        # -- the timeline of each environment, newest first
        dev = runs_of(page, "dev")
        assert [r["run"] for r in dev] == [
            ids["failed"],
            ids["downgrade"],
            ids["rerun"],
            ids["killed"],
            ids["first"],
        ]
        assert [r["outcome"] for r in dev] == [
            "failed",
            "succeeded",
            "succeeded",
            "interrupted",
            "succeeded",
        ]
        failed, down, rerun, killed, first = (row(r) for r in dev)
        assert failed["outcome"] == "failed" and FAIL_REV in failed["details"]
        assert "division by zero" in failed["details"]
        assert down["command"] == "downgrade" and "undo slow" in down["details"]
        assert down["from_to"] == f"{SLOW_REV} → {HEAD}"
        assert killed["outcome"] == "interrupted" and "never finished" in killed["details"]
        # recorded on the dead run's behalf by the next run that took dev's lock
        noticer = re.search(r"recorded by run (\w+)", killed["details"])
        assert noticer is not None, killed["details"]
        later = [e for e in pg_project.audit_events("dev") if e["run_id"] == noticer.group(1)]
        assert later and later[0]["timestamp"] > killed["start"][:10]
        assert first["ticket"] == SCRIPT_TICKET  # shown as text
        assert first["from_to"] == f"base → {HEAD}" and first["actor"] == "tester"
        assert first["duration"].endswith(("ms", "s"))

        prod = [row(r) for r in runs_of(page, "prod")]
        assert [r["outcome"] for r in prod] == ["succeeded", "refused"]
        # who approved, not only how
        assert (prod[0]["ticket"], prod[0]["approval"]) == ("CHG-8", "tester (--approve)")
        # a refusal is one line; its whole text is one click away
        assert "Refused" in prod[1]["details"] and "not run on staging" in prod[1]["details"]
        assert "Blocked" not in prod[1]["details"]  # folded
        assert (
            page.evaluate("document.querySelector('tr.run[data-env=prod] details.refusal').open")
            is False
        )

        # -- where each environment stands, and whose evidence can be trusted
        summary = {
            r[0]: r[1:]
            for r in page.evaluate(
                "Array.from(document.querySelectorAll('#summary-table tbody tr'))"
                ".map(tr => Array.from(tr.cells).map(c => c.innerText.trim()))"
            )
        }
        assert summary["dev"][0] == OK_REV and summary["dev"][1] == "first environment"
        assert summary["staging"][0] == HEAD and summary["staging"][1] == "2 revision(s) behind dev"
        assert summary["prod"][0] == HEAD and summary["prod"][1] == "level with staging"
        # the failed run committed OK_REV before FAIL_REV failed: it is dev's latest change
        assert f"→ {OK_REV}" in summary["dev"][-2] and "(failed)" in summary["dev"][-2]
        for env in ("dev", "staging", "prod"):
            assert summary[env][-1] == "hash chain only (unsigned)"  # never a green "intact"
        assert [row(r)["ticket"] for r in runs_of(page, "staging")] == ["CHG-7"]

        # -- verification and what the report was made from
        assert page.evaluate(
            "Array.from(document.querySelectorAll('#verification-table tbody tr'))"
            ".map(tr => [tr.dataset.env, tr.dataset.result])"
        ) == [["dev", "intact"], ["staging", "intact"], ["prod", "intact"]]
        events = len(pg_project.run("audit", "--json").stdout.splitlines())
        assert page.evaluate("document.getElementById('event-count').innerText") == str(events)

        # -- filtering, with the keyboard: "/" focuses the search box
        total = len(dev) + len(prod) + 1
        assert page.evaluate("document.getElementById('shown').value") == (
            f"{total} of {total} runs shown"
        )
        page.key("/", "Slash", "/")
        assert page.evaluate("document.activeElement.id") == "q"
        page.type_text("chg-8")
        visible = [r["run"] for r in runs_of(page) if r["visible"]]
        assert visible == [ids["prod"]]
        assert page.evaluate("document.getElementById('shown').value") == (
            f"1 of {total} runs shown"
        )
        page.key("Escape", "Escape", key_code=27)
        assert len([r for r in runs_of(page) if r["visible"]]) == total
        page.evaluate(
            "(s => { s.value = 'interrupted'; s.dispatchEvent(new Event('change')); })"
            "(document.getElementById('f-outcome'))"
        )
        assert [r["run"] for r in runs_of(page) if r["visible"]] == [ids["killed"]]
        page.key("Escape", "Escape", key_code=27)  # nothing focused but the body: no effect
        page.evaluate("document.getElementById('f-clear').click()")
        assert len([r for r in runs_of(page) if r["visible"]]) == total
        page.evaluate("document.getElementById('rq').focus()")
        page.type_text(SLOW_REV[:6])
        shown_revs = [m["revision"] for m in page.evaluate(READ_MATRIX) if not m["hidden"]]
        assert shown_revs == [SLOW_REV]

        # -- printed: the controls go, the tables stay
        page.call("Emulation.setEmulatedMedia", media="print")
        assert page.evaluate("getComputedStyle(document.getElementById('run-filter')).display") == (
            "none"
        )
        assert page.evaluate("getComputedStyle(document.getElementById('matrix-table')).display")
        assert page.errors == []


def test_report_filters_are_stated_and_applied(pg_project: Project, tmp_path: Path) -> None:
    run_ok(pg_project, 0, "migrate", "dev", "--ticket", "CHG-1")
    run_ok(pg_project, 0, "promote", "staging")
    out = tmp_path / "staging.html"
    result = pg_project.run(
        "audit", "report", "--env", "staging", "--since", "1d", "--out", str(out)
    )
    assert result.code == 0, result.output
    with Browser() as browser:
        page = browser.open(out)
        assert page.errors == []
        filters = page.evaluate(
            "Array.from(document.querySelectorAll('#filters dt')).map(dt => dt.innerText + '='"
            " + dt.nextElementSibling.innerText)"
        )
        assert filters[0] == "--env=staging" and filters[1].startswith("--since=1d (from 20")
        assert {r["env"] for r in runs_of(page)} == {"staging"}
        assert page.evaluate(
            "Array.from(document.querySelectorAll('#verification-table tbody tr'))"
            ".map(tr => tr.dataset.env)"
        ) == ["staging"]
        assert "tester" in page.evaluate("document.body.innerText")
        assert page.evaluate("document.getElementById('generated').innerText").endswith("UTC")
        assert page.evaluate("document.getElementById('version').innerText")


def test_report_names_a_broken_chain_and_exits_1(pg_project: Project, tmp_path: Path) -> None:
    run_ok(pg_project, 0, "migrate", "dev")
    engine = pg_project.engine("dev")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE orchestrator_audit DISABLE TRIGGER USER")
            connection.exec_driver_sql(
                "UPDATE orchestrator_audit SET payload = replace(payload, 'tester', 'mallory')"
                " WHERE id = 3"
            )
    finally:
        engine.dispose()
    out = tmp_path / "r.html"
    result = pg_project.run("audit", "report", "--env", "dev", "--out", str(out))
    assert result.code == 1, result.output
    assert "dev: audit chain BROKEN at row 3" in result.stdout
    with Browser() as browser:
        page = browser.open(out)
        text = page.evaluate("document.getElementById('verification-table').innerText")
        assert "BROKEN at row 3" in text and "does not match its hash" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "report"], "needs --out FILE.html"),
        (["audit", "report", "--out", "/nonexistent-dir/r.html"], "does not exist"),
        (["audit", "report", "--out", "."], "is a directory"),
        (["audit", "--out", "x.html"], "--out names the file of `audit report`"),
        (["audit", "verify", "--format", "csv"], "has no formats"),
        (["audit", "--json", "--format", "csv"], "disagree"),
        (["audit", "report", "--out", "r.html", "--env", "nope"], "nope"),
    ],
)
def test_report_bad_input_is_one_paragraph_and_exit_2(
    sqlite_project: Project, args: list[str], message: str
) -> None:
    result = sqlite_project.run(*args, ORCHESTRATOR_LOG_FORMAT="console")
    assert result.code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (sqlite_project.path / "r.html").exists()


# -- CSV and the terminal table ------------------------------------------------------------

FORGED = 'CHG-1\n2026-01-01 00:00:00.000  prod  run.succeeded  "quoted", \x1b[2J\u202eevil'


def test_csv_round_trips_to_the_events_of_json(pg_project: Project) -> None:
    run_ok(pg_project, 0, "migrate", "dev", "--ticket", FORGED)
    assert pg_project.run("migrate", "prod", "--approve").code == 3
    as_json = [json.loads(line) for line in pg_project.run("audit", "--json").stdout.splitlines()]
    result = pg_project.run("audit", "--format", "csv")
    assert result.code == 0, result.output
    assert result.stdout.startswith("timestamp,event,run_id,env,")
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert len(rows) == len(as_json) > 10
    for row_, event in zip(rows, as_json, strict=True):
        assert set(event) <= set(row_)
        assert {k for k, v in row_.items() if v != ""} == set(event)
        for key, value in event.items():
            cell = row_[key]
            assert (cell if isinstance(value, str) else json.loads(cell)) == value, key
    assert {r["ticket"] for r in rows if r["env"] == "dev"} == {FORGED}
    assert any(r["event"] == "gate.refused" and "not run on staging" in r["blocked"] for r in rows)
    # --format json is --json
    assert (
        pg_project.run("audit", "--format", "json").stdout
        == pg_project.run("audit", "--json").stdout
    )


def test_the_audit_table_escapes_control_characters(pg_project: Project) -> None:
    run_ok(pg_project, 0, "migrate", "dev", "--ticket", FORGED)
    result = pg_project.run("audit", "--env", "dev")
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    events = pg_project.audit_events("dev")
    assert len(lines) == 1 + len(events)  # a header and one line per event: none forged
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    escaped = 'CHG-1\\n2026-01-01 00:00:00.000  prod  run.succeeded  "quoted", \\x1b[2J\\u202eevil'
    assert sum(escaped in line for line in lines) == len(events)
    assert all(line.split()[2] == "dev" for line in lines[1:])


def test_csv_rows_follow_the_filters(sqlite_project: Project) -> None:
    run_ok(sqlite_project, 0, "migrate", "dev")
    assert sqlite_project.run("migrate", "prod", "--approve").code == 3
    result = sqlite_project.run("audit", "--format", "csv", "--outcome", "refused")
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert [(r["env"], r["event"]) for r in rows] == [
        ("prod", "gate.refused"),
        ("prod", "run.refused"),
    ]
