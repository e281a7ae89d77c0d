"""Audit review without a database (SPEC Part 2 "Audit review a person can read"): the report's
pure core (events -> runs, matrix, summaries), its HTML rendering, the CSV export and the
escaping of control characters for the terminal table."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from html import unescape
from typing import Any

import pytest

from orchestrator.commands.audit import CSV_COLUMNS, events_csv
from orchestrator.commands.report import duration, render_html
from orchestrator.core.report import NO_END, build_matrix, build_report, collect_runs
from orchestrator.core.textsafe import escape_controls

A, B, C = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
SUM_A, SUM_B, SUM_B2 = "a" * 64, "b" * 64, "e" * 64


def ts(minute: int, second: int = 0) -> str:
    return f"2026-11-20T10:{minute:02d}:{second:02d}.000000Z"


def ev(minute: int, event: str, run: str, env: str, **fields: Any) -> dict[str, Any]:
    base = {"timestamp": ts(minute), "event": event, "run_id": run, "env": env}
    return {**base, "actor": fields.pop("actor", "alice"), **fields}


def history() -> list[dict[str, Any]]:
    """dev succeeds (A, B); prod refused by the gate; staging succeeds after a lock wait;
    dev fails on C; a dev run is killed and recorded as interrupted by the next; dev
    downgrades B; prod runs A and B approved, B with another file; a run with no end yet."""
    return [
        ev(0, "run.started", "r1", "dev", command="migrate", to_revision=B, ticket="T-1"),
        ev(0, "lock.acquired", "r1", "dev", ticket="T-1"),
        ev(1, "migration.applied", "r1", "dev", revision=A, checksum=SUM_A, duration_ms=40),
        ev(1, "migration.applied", "r1", "dev", revision=B, checksum=SUM_B, duration_ms=50),
        ev(1, "run.succeeded", "r1", "dev", outcome="succeeded", duration_ms=1500),
        ev(2, "run.started", "r2", "prod", command="migrate", to_revision=B, actor="bob"),
        ev(
            2,
            "gate.refused",
            "r2",
            "prod",
            actor="bob",
            outcome="refused",
            blocked=[{"revision": A, "reason": "not run on staging"}],
        ),
        ev(2, "run.refused", "r2", "prod", actor="bob", outcome="refused", error="Refused: gate"),
        ev(3, "run.started", "r3", "staging", command="promote", to_revision=B, git_sha="f" * 40),
        ev(
            3,
            "lock.waiting",
            "r3",
            "staging",
            holder={"pid": 42, "application_name": "orchestrator staging run=zz"},
        ),
        ev(4, "lock.acquired", "r3", "staging", waivers=["aaaaaaaaaaaa:ban-drop-column"]),
        ev(4, "migration.applied", "r3", "staging", revision=A, checksum=SUM_A),
        ev(4, "migration.applied", "r3", "staging", revision=B, checksum=SUM_B),
        ev(5, "run.succeeded", "r3", "staging", outcome="succeeded", duration_ms=61000),
        ev(6, "run.started", "r4", "dev", command="migrate", from_revision=B, to_revision=C),
        ev(6, "migration.failed", "r4", "dev", outcome="failed", revision=C, error="boom"),
        ev(6, "run.failed", "r4", "dev", outcome="failed", revision=C, error="C failed"),
        ev(7, "run.started", "r5", "dev", command="migrate", actor="carol", pid=9),
        ev(8, "run.started", "r6", "dev", command="migrate", to_revision=B),
        ev(
            8,
            "run.interrupted",
            "r5",
            "dev",
            actor="carol",
            outcome="interrupted",
            reason="started at 10:07 by pid 9 and never finished",
            noticed_by="r6",
        ),
        ev(8, "run.succeeded", "r6", "dev", outcome="succeeded"),
        ev(9, "run.started", "r7", "dev", command="downgrade", from_revision=B, to_revision=A),
        ev(9, "migration.reverted", "r7", "dev", revision=B, checksum=SUM_B),
        ev(9, "run.succeeded", "r7", "dev", outcome="succeeded", reason="undo B"),
        ev(10, "run.started", "r8", "prod", command="promote", to_revision=B),
        ev(10, "lock.acquired", "r8", "prod", approval="--approve", ticket="CHG-9"),
        ev(10, "migration.applied", "r8", "prod", revision=A, checksum=SUM_A),
        ev(10, "migration.applied", "r8", "prod", revision=B, checksum=SUM_B2),
        ev(11, "run.succeeded", "r8", "prod", outcome="succeeded", approval="--approve"),
        ev(12, "run.started", "r9", "qa", command="migrate"),
    ]


def runs_by_id() -> dict[str, Any]:
    return {r.run_id: r for r in collect_runs(history())}


def test_each_run_gathers_its_events_fields() -> None:
    runs = runs_by_id()
    r1 = runs["r1"]
    assert (r1.env, r1.outcome, r1.started, r1.ended) == ("dev", "succeeded", ts(0), ts(1))
    assert (r1.ticket, r1.actor, r1.command, r1.to_revision) == ("T-1", "alice", "migrate", B)
    assert r1.duration_ms == 1500 and r1.events == 5
    assert [(s.revision, s.direction, s.checksum) for s in r1.steps] == [
        (A, "applied", SUM_A),
        (B, "applied", SUM_B),
    ]
    assert runs["r3"].git_sha == "f" * 40
    assert runs["r3"].waivers == ["aaaaaaaaaaaa:ban-drop-column"]
    assert runs["r8"].approval == "--approve" and runs["r8"].ticket == "CHG-9"
    assert runs["r1"].approval is None and runs["r1"].lock_waits == []


def test_refusals_failures_lock_waits_and_interruptions_keep_their_reasons() -> None:
    runs = runs_by_id()
    assert runs["r2"].outcome == "refused"
    assert runs["r2"].refusals == [f"{A}: not run on staging", "Refused: gate"]
    assert runs["r4"].outcome == "failed"
    assert runs["r4"].errors == [f"{C}: boom", "C failed"]
    (wait,) = runs["r3"].lock_waits
    assert wait.timestamp == ts(3) and "orchestrator staging run=zz" in wait.holder
    assert "42" in wait.holder
    r5 = runs["r5"]
    assert (r5.outcome, r5.noticed_by, r5.actor) == ("interrupted", "r6", "carol")
    assert r5.interrupted == "started at 10:07 by pid 9 and never finished"
    assert r5.started == ts(7) and r5.duration_ms is None  # nothing invented
    r7 = runs["r7"]
    assert (r7.command, r7.from_revision, r7.to_revision) == ("downgrade", B, A)
    assert [(s.revision, s.direction) for s in r7.steps] == [(B, "reverted")]
    assert runs["r9"].outcome == NO_END and runs["r9"].ended is None


def test_a_lock_timeout_shows_as_a_failure_with_the_holder() -> None:
    events = [
        ev(0, "run.started", "x", "prod"),
        ev(0, "lock.waiting", "x", "prod", holder={"pid": 7}),
        ev(
            1,
            "run.failed",
            "x",
            "prod",
            outcome="failed",
            error="lock not acquired",
            holder={"pid": 7, "application_name": "orchestrator prod run=y"},
        ),
    ]
    (run,) = collect_runs(events)
    assert run.outcome == "failed" and run.errors == ["lock not acquired"]
    assert len(run.lock_waits) == 2 and "run=y" in run.lock_waits[1].holder


def test_matrix_shows_when_each_env_ran_each_revision_and_whether_checksums_agree() -> None:
    matrix = {row.revision: row for row in build_matrix(collect_runs(history()))}
    assert list(matrix) == [A, B] or set(matrix) == {A, B}
    a, b = matrix[A], matrix[B]
    assert set(a.cells) == {"dev", "staging", "prod"}
    assert (a.cells["dev"].applied, a.cells["staging"].applied) == (ts(1), ts(4))
    assert a.cells["prod"].applied == ts(10) and a.cells["prod"].applied_run == "r8"
    assert a.agreement == "agree" and a.checksums == {SUM_A}
    # dev reverted B after applying it; prod ran B from another file
    assert (b.cells["dev"].state, b.cells["dev"].reverted) == ("reverted", ts(9))
    assert b.cells["staging"].state == "applied"
    assert b.agreement == "differ" and b.checksums == {SUM_B, SUM_B2}
    assert C not in matrix  # it failed: never applied anywhere


def test_matrix_single_env_and_reapplied_revision() -> None:
    events = [
        ev(0, "migration.applied", "r1", "dev", revision=A, checksum=SUM_A),
        ev(1, "migration.reverted", "r2", "dev", revision=A, checksum=SUM_A),
        ev(2, "migration.applied", "r3", "dev", revision=A, checksum=SUM_A),
    ]
    (row,) = build_matrix(collect_runs(events))
    cell = row.cells["dev"]
    assert (cell.state, cell.applied, cell.reverted, cell.applied_run) == (
        "applied",
        ts(2),
        ts(1),
        "r3",
    )
    assert row.agreement == "single"


def test_fleet_databases_that_ran_different_files_disagree() -> None:
    events = [
        ev(0, "migration.applied", "r1", "prod", target="db1", revision=A, checksum=SUM_A),
        ev(1, "migration.applied", "r2", "prod", target="db2", revision=A, checksum=SUM_B),
    ]
    (row,) = build_matrix(collect_runs(events))
    assert row.agreement == "differ" and row.cells["prod"].targets == {"db1", "db2"}


def test_report_orders_envs_counts_outcomes_and_caps_runs_but_not_counts() -> None:
    report = build_report(history(), ["dev", "staging", "prod"])
    assert report.envs == ["dev", "staging", "prod", "qa"]  # promotion order, then the rest
    assert [r.run_id for r in report.runs["dev"]] == ["r7", "r6", "r5", "r4", "r1"]
    dev = report.summaries["dev"]
    assert dev.outcomes == {"succeeded": 3, "failed": 1, "interrupted": 1}
    assert dev.last_change is not None and dev.last_change.run_id == "r7"
    assert report.summaries["prod"].last_change.run_id == "r8"  # type: ignore[union-attr]
    assert (report.events, report.runs_total, report.runs_shown) == (30, 9, 9)
    assert (report.first_event, report.last_event) == (ts(0), ts(12))

    capped = build_report(history(), ["dev", "staging", "prod"], max_runs=8)
    assert [r.run_id for r in capped.runs["dev"]] == ["r7", "r6"]  # 8 // 4 envs each
    assert capped.runs_shown == 6 and capped.runs_total == 9
    assert capped.summaries["dev"].runs == 5 and capped.summaries["dev"].shown == 2


# -- rendering -------------------------------------------------------------------------------


def render(events: list[dict[str, Any]], **kw: Any) -> str:
    verification = [
        {"env": "dev", "target": "dev", "checked": True, "rows": 9, "intact": True},
        {
            "env": "prod",
            "target": "prod",
            "checked": True,
            "rows": 7,
            "intact": False,
            "broken": {"id": 5, "timestamp": ts(10), "problem": "its content does not match"},
        },
        {"env": "staging", "target": "staging", "checked": False, "error": "DB down"},
    ]
    return render_html(
        build_report(events, ["dev", "staging", "prod"], **kw),
        verification,
        filters=[("--since", "30d (from 2026-10-21T00:00:00.000000Z)")],
        unreachable=["qa: QA_DATABASE_URL is not set"],
        generated_at="2026-11-21 00:00:00 UTC",
        version="9.9.9",
    )


def test_html_is_self_contained_and_pins_its_own_script_and_style() -> None:
    html = render(history())
    assert "9.9.9" in html and "2026-11-21 00:00:00 UTC" in html
    assert "30d (from 2026-10-21T00:00:00.000000Z)" in html
    assert "QA_DATABASE_URL is not set" in html
    assert re.search(r"BROKEN</span> at row 5", html) and "its content does not match" in html
    # nothing fetched: no src/href to another place, no @import or url() but data:
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", html)
    assert "@import" not in html and not re.search(r"url\((?!data:)", html)
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert found
    csp = unescape(found.group(1))
    assert "default-src 'none'" in csp

    (script,) = re.findall(r"<script>(.*?)</script>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


def test_event_text_is_escaped_html_and_control_characters_are_visible() -> None:
    events = history()
    events[0]["ticket"] = "<script>alert(1)</script>"
    events[4]["error"] = "x"
    events[7]["error"] = "line one\nFORGED \u202eevil\x1b[31m"
    html = render(events)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # the page's own
    assert "line one\\nFORGED \\u202eevil\\x1b[31m" in html
    assert "\u202e" not in html and "\x1b" not in html


def test_report_over_100k_events_stays_small_and_says_it_is_capped() -> None:
    events = []
    for i in range(100_000 // 5):
        run, env = f"run{i}", ("dev", "staging", "prod")[i % 3]
        events += [
            ev(0, "run.started", run, env, ticket=f"T-{i}", to_revision=A),
            ev(0, "lock.acquired", run, env),
            ev(0, "migration.applied", run, env, revision=f"{i % 700:012d}", checksum=SUM_A),
            ev(0, "run.succeeded", run, env, outcome="succeeded", duration_ms=i),
            ev(0, "lock.released", run, env),
        ]
    html = render(events)
    assert len(html.encode()) < 5_000_000
    assert "Showing the 1998 most recent of 20000 runs" in html
    assert "Showing the 500 newest of 700 revisions" in html


def test_duration_is_readable() -> None:
    assert [duration(v) for v in (None, 5, 1500, 61_000, 3_723_000)] == [
        "",
        "5 ms",
        "1.5 s",
        "1 min 1 s",
        "1 h 2 min",
    ]


# -- CSV and the terminal table ------------------------------------------------------------


def test_csv_round_trips_to_the_same_events() -> None:
    events = history()
    events[0]["ticket"] = 'a "quoted", multi\nline\r\nticket'
    text = events_csv(events)
    assert text.endswith("\r\n") and text.count("\r\n") >= len(events) + 1
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(rows[0])[: len(CSV_COLUMNS)] == list(CSV_COLUMNS)
    assert len(rows) == len(events)
    for row, event in zip(rows, events, strict=True):
        back = {k: (v if k not in NON_TEXT else json.loads(v)) for k, v in row.items() if v != ""}
        assert back == event


NON_TEXT = {"duration_ms", "holder", "blocked", "waivers", "pid"}


def test_csv_of_no_events_is_the_header() -> None:
    assert events_csv([]) == ",".join(CSV_COLUMNS) + "\r\n"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("CHG-1", "CHG-1"),
        ("a\nb", "a\\nb"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("\x00\x07\x7f\x85\x9b", "\\x00\\x07\\x7f\\x85\\x9b"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("".join(chr(c) for c in range(0x202A, 0x202F)), "\\u202a\\u202b\\u202c\\u202d\\u202e"),
        ("".join(chr(c) for c in range(0x2066, 0x206A)), "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c\u2028\u2029", "\\u200e\\u200f\\u061c\\u2028\\u2029"),
        ("naïve café ✓ 日本", "naïve café ✓ 日本"),
    ],
)
def test_control_characters_become_visible_escapes(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


# -- one read per database: verify and filter the same rows -------------------------------


def test_check_chain_returns_every_event_and_the_first_broken_row() -> None:
    from orchestrator.evidence import ledger

    events = history()
    rows = ledger.chain_rows(events, 0, ledger.GENESIS)
    assert ledger.check_chain(rows) == (None, events)
    rows[4] = {**rows[4], "payload": rows[4]["payload"].replace("alice", "mallory")}
    broken, records = ledger.check_chain(rows)
    assert broken is not None and broken.id == 5 and "hash" in broken.problem
    assert len(records) == len(events) and records[4]["actor"] == "mallory"  # shown, not hidden
    assert ledger.verify_chain(rows) == broken


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({}, 30),
        ({"env": "prod"}, 8),
        ({"actor": "bob"}, 3),
        ({"event": "run.started"}, 9),
        ({"outcome": "refused"}, 2),
        ({"run_id": "r3"}, 6),
        ({"revision": "aaaa"}, 3),
        ({"revision": ""}, 9),  # as SQL's LIKE '%': every event with a revision
        ({"since": ts(10)}, 6),
        ({"until": ts(0)}, 2),
        ({"since": ts(2), "until": ts(2), "env": "prod"}, 3),
    ],
)
def test_event_filter_matches_the_sql_filter(
    flt: dict[str, Any], expected: int, tmp_path: Any
) -> None:
    """The report filters in Python the rows it verified; `audit` filters in SQL: the same."""
    import sqlalchemy as sa

    from orchestrator.evidence import ledger

    f = ledger.AuditFilter(**flt)
    in_python = [e for e in history() if ledger.event_matches(f, e)]
    assert len(in_python) == expected
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with engine.begin() as connection:
            ledger.ensure_tables(connection)
            ledger.append_audit(connection, history())
        with engine.connect() as connection:
            in_sql = ledger.query_audit(connection, f)
    finally:
        engine.dispose()
    assert [{k: v for k, v in e.items() if k != "id"} for e in in_sql] == in_python


def test_the_latest_change_counts_an_interrupted_run_that_committed_a_revision() -> None:
    events = [
        ev(0, "run.started", "d1", "dev", command="downgrade", from_revision=B, to_revision=A),
        ev(0, "migration.reverted", "d1", "dev", revision=B, to_revision=A),
        ev(0, "run.succeeded", "d1", "dev", outcome="succeeded"),
        ev(1, "run.started", "k1", "dev", command="migrate", from_revision=A, to_revision=C),
        ev(1, "migration.applied", "k1", "dev", revision=B, to_revision=B, git_dirty=True),
        ev(2, "run.interrupted", "k1", "dev", outcome="interrupted", reason="SIGTERM"),
    ]
    report = build_report(events, ["dev"])
    latest = report.summaries["dev"].last_change
    assert latest is not None and latest.run_id == "k1" and latest.reached == B
    assert latest.git_dirty  # from the event that said so


def test_who_approved_and_a_refusal_in_one_line() -> None:
    events = [
        ev(0, "run.started", "p1", "prod", command="migrate", actor="ci", approval="--approve"),
        ev(0, "run.succeeded", "p1", "prod", outcome="succeeded", actor="ci"),
        ev(
            1,
            "run.started",
            "p2",
            "prod",
            command="migrate",
            actor="ci",
            plan_approvals=["keys/release-manager.pub"],
        ),
        ev(1, "run.refused", "p2", "prod", outcome="refused", error="Refused: " + "x " * 200),
    ]
    runs = {r.run_id: r for r in collect_runs(events)}
    assert runs["p1"].approved_by == "ci (--approve)"
    assert runs["p2"].approved_by == "plan approved by keys/release-manager.pub"
    assert len(runs["p2"].refusal_line) <= 160 and runs["p2"].refusal_line.endswith("...")
