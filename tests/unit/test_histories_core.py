"""The pure pieces behind issue 19: lint refusal text, unlintable findings, dirty trees (with a
real git), revisions whose downgrade does nothing, Python warnings as log records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.evidence.audit import detect_git_dirty, is_dirty
from orchestrator.migrations.lint import UNLINTABLE, Finding, blocking, refusal_message, unlintable
from orchestrator.migrations.revisions import reverts_nothing

# -- lint refusal --------------------------------------------------------------------------------


def finding(revision: str, rule: str, line: int | None = 3, help: str = "") -> Finding:
    return Finding(revision, rule, f"{rule} happened.", help, line, waived=False)


def test_refusal_names_every_rule_with_one_waiver_line_per_rule_and_revision() -> None:
    bad = [
        finding("r1", "changing-column-type", help="Rewrites the table."),
        finding("r1", "ban-drop-column", help="Breaks old code."),
        finding("r1", "changing-column-type", line=9, help="Rewrites the table."),
        finding("r2", "changing-column-type", help="Rewrites the table."),
        unlintable(
            "r3", "AttributeError: 'NoneType' object has no attribute 'fetchall'", frozenset()
        ),
    ]
    files = {"r1": "r1_a.py", "r2": "r2_b.py", "r3": "r3_c.py"}
    text = refusal_message("prod", bad, files, "environments/prod.yaml")
    assert text.startswith("Refused by lint on prod: ")
    for rev, rule in [
        ("r1", "changing-column-type"),
        ("r1", "ban-drop-column"),
        ("r2", "changing-column-type"),
        ("r3", UNLINTABLE),
    ]:
        assert f"{rev} breaks {rule}" in text
    assert (
        "in r1_a.py: `# orchestrator: allow changing-column-type`, "
        "`# orchestrator: allow ban-drop-column`"
    ) in text
    assert "in r2_b.py: `# orchestrator: allow changing-column-type`" in text
    assert "in r3_c.py: `# orchestrator: allow unlintable`" in text
    # squawk's advice once per rule, not once per finding
    assert text.count("Rewrites the table") == 1 and text.count("Breaks old code") == 1
    assert "(line 9 of its SQL)" in text and "fetchall" in text
    # the exact lines of prod's file that waive them on prod only
    assert (
        "add to environments/prod.yaml, under `policy:`:\n"
        "  lint_waivers:\n"
        '    "r1": [changing-column-type, ban-drop-column]\n'
        '    "r2": [changing-column-type]\n'
        '    "r3": [unlintable]\n'
    ) in text


def test_once_a_predecessor_ran_it_only_the_environment_file_is_offered() -> None:
    bad = [finding("r1", "ban-drop-column")]
    text = refusal_message(
        "prod", bad, {"r1": "r1_a.py"}, "environments/prod.yaml", True, predecessor="staging"
    )
    assert "# orchestrator: allow" not in text
    assert "before any environment runs" not in text
    assert 'under `policy:` `lint_waivers:`:\n    "r1": [ban-drop-column]\n' in text
    assert "staging has run these files" in text


def test_a_revision_that_reads_rows_is_named_as_one_with_its_reason() -> None:
    reason = "AttributeError: 'NoneType' object has no attribute 'fetchall' (line 20 of d.py)"
    found = unlintable("r1", reason, frozenset())
    assert found.message.startswith("it reads rows from the database")
    assert reason in found.message
    assert "waive `unlintable`" in found.help


def test_unlintable_is_blocking_until_waived() -> None:
    reason = "TypeError: 'NoneType' object is not iterable"
    plain = unlintable("r1", reason, frozenset())
    waived = unlintable("r1", reason, frozenset({"unlintable"}))
    assert plain.rule == "unlintable" and reason in plain.message
    assert blocking([plain, waived]) == [plain]


# -- git dirty -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("porcelain", "dirty"),
    [
        ("", False),
        ("?? .orchestrator/dev.db\0?? notes.txt\0", False),
        ("?? alembic/versions/abc_new.py\0", True),
        (" M alembic/versions/abc.py\0", True),
        ("M  README.md\0", True),
        ("R  alembic/versions/new.py\0alembic/versions/old.py\0", True),
        (" D app/models.py\0", True),
    ],
)
def test_is_dirty(porcelain: str, dirty: bool) -> None:
    assert is_dirty(porcelain) is dirty


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_detect_git_dirty_in_a_real_checkout(tmp_path: Path) -> None:
    assert detect_git_dirty(tmp_path) is False  # not a checkout: nothing claimed
    git(tmp_path, "init", "-q")
    versions = tmp_path / "alembic" / "versions"
    versions.mkdir(parents=True)
    (versions / "a_first.py").write_text("revision = 'a'\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    assert detect_git_dirty(tmp_path) is False
    (tmp_path / "dev.db").write_bytes(b"SQLite")  # a database next to the project
    assert detect_git_dirty(tmp_path) is False
    (versions / "b_second.py").write_text("revision = 'b'\n")  # a revision not committed
    assert detect_git_dirty(tmp_path) is True
    (versions / "b_second.py").unlink()
    (versions / "a_first.py").write_text("revision = 'a'  # edited\n")
    assert detect_git_dirty(tmp_path) is True


# -- pass downgrades -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upgrade", "downgrade", "hollow"),
    [
        ("op.create_index('ix', 't', ['c'])", "pass", True),
        ("op.create_index('ix', 't', ['c'])", '"""nothing to undo"""', True),
        ("op.create_index('ix', 't', ['c'])", "op.drop_index('ix', table_name='t')", False),
        ("pass", "pass", False),  # a merge point: nothing to revert
        ("op.execute('SELECT 1')", "raise NotImplementedError('one way')", False),
    ],
)
def test_reverts_nothing(tmp_path: Path, upgrade: str, downgrade: str, hollow: bool) -> None:
    path = tmp_path / "r.py"
    path.write_text(f"def upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    {downgrade}\n")
    assert reverts_nothing(path) is hollow


# -- Python warnings -----------------------------------------------------------------------------


def test_python_warnings_are_json_lines() -> None:
    """A warnings.warn() after configure_logging("json") is one JSON object on stderr."""
    code = (
        "import warnings\n"
        "from orchestrator.core.logging import configure_logging\n"
        "configure_logging('json')\n"
        "warnings.warn('autoincrement and existing_autoincrement only make sense for MySQL')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    record = json.loads(lines[0])
    assert "only make sense for MySQL" in record["event"]
    assert record["level"] == "warning" and record["logger"] == "py.warnings"
