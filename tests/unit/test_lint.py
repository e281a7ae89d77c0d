"""orchestrator.migrations.lint against the real squawk-cli (no mocks)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from orchestrator.migrations.lint import (
    DEFAULT_EXCLUDE,
    Finding,
    SquawkMissing,
    blocking,
    ensure_squawk,
    find_squawk,
    lint_revisions,
    locate_squawk,
    parse_waivers,
)

CREATE_INDEX = "CREATE INDEX ix_orders_user_id ON orders (user_id);\n"

ALEMBIC_INDEX = (
    "BEGIN;\n"
    "\n"
    "-- Running upgrade 5c626978d652 -> 7a1b2c3d4e5f\n"
    "\n"
    "CREATE INDEX ix_orders_user_id ON orders (user_id);\n"
    "\n"
    "UPDATE alembic_version SET version_num='7a1b2c3d4e5f' "
    "WHERE alembic_version.version_num = '5c626978d652';\n"
    "\n"
    "COMMIT;\n"
)


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


# --------------------------------------------------------------------------- parse_waivers


def test_parse_waivers_single() -> None:
    src = "def upgrade():\n    # orchestrator: allow require-concurrent-index-creation\n    pass\n"
    assert parse_waivers(src) == frozenset({"require-concurrent-index-creation"})


def test_parse_waivers_several_on_one_line_commas_and_spaces() -> None:
    src = "# orchestrator: allow ban-drop-column, renaming-column changing-column-type,\n"
    assert parse_waivers(src) == {"ban-drop-column", "renaming-column", "changing-column-type"}


def test_parse_waivers_several_lines_case_insensitive_prefix_and_spacing() -> None:
    src = "#Orchestrator:Allow ban-drop-table\nx = 1  #  ORCHESTRATOR :  allow   Ban-Drop-Column\n"
    assert parse_waivers(src) == {"ban-drop-table", "ban-drop-column"}


def test_parse_waivers_stops_at_reason() -> None:
    src = "# orchestrator: allow ban-drop-column -- unused since v3\n"
    assert parse_waivers(src) == {"ban-drop-column"}
    src = "# orchestrator: allow ban-drop-column (unused since v3)\n"
    assert parse_waivers(src) == {"ban-drop-column"}


def test_parse_waivers_expands_aliases() -> None:
    assert "prefer-timestamp-tz" in parse_waivers("# orchestrator: allow prefer-timestamptz")
    assert {"require-lock-timeout", "require-statement-timeout"} <= parse_waivers(
        "# orchestrator: allow require-timeout-settings"
    )


def test_parse_waivers_ignores_other_text() -> None:
    src = (
        '"""orchestrator: allow ban-drop-table"""  \n'  # not a comment
        "# orchestrator: deny ban-drop-table\n"
        "# orchestrator: allow\n"
        "# allow ban-drop-table\n"
    )
    assert parse_waivers(src) == frozenset()
    assert parse_waivers("") == frozenset()


# --------------------------------------------------------------------------- squawk lookup


def test_locate_squawk_with_empty_path_is_none_and_ensure_raises() -> None:
    assert locate_squawk(interpreter_dir=None, path="") is None
    with pytest.raises(SquawkMissing, match="pip install squawk-cli"):
        ensure_squawk(locate_squawk(interpreter_dir=None, path=""))


def _fake_squawk(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "squawk"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return str(exe)


def test_locate_squawk_prefers_interpreter_dir_then_path(tmp_path: Path) -> None:
    venv_bin, elsewhere = tmp_path / "venv-bin", tmp_path / "elsewhere"
    on_path = _fake_squawk(elsewhere)
    assert locate_squawk(interpreter_dir=str(venv_bin), path=str(elsewhere)) == on_path
    in_venv = _fake_squawk(venv_bin)
    assert locate_squawk(interpreter_dir=str(venv_bin), path=str(elsewhere)) == in_venv
    assert locate_squawk(interpreter_dir=None, path=str(elsewhere)) == on_path


def test_find_squawk_prefers_interpreter_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The venv's squawk (beside this interpreter), not another one earlier on PATH."""
    monkeypatch.setenv("PATH", str(Path(_fake_squawk(tmp_path / "other")).parent))
    found = find_squawk()
    assert found == os.path.join(os.path.dirname(sys.executable), "squawk")
    assert ensure_squawk(found) == found


# --------------------------------------------------------------------------- lint_revisions


def test_create_index_without_concurrently_is_flagged_with_help() -> None:
    findings = lint_revisions({"7a1b2c3d4e5f": ALEMBIC_INDEX}, {}, DEFAULT_EXCLUDE)
    [f] = [f for f in findings if f.rule == "require-concurrent-index-creation"]
    assert f.revision == "7a1b2c3d4e5f"
    assert "concurrently" in f.help.lower()
    assert f.message
    assert f.line == 5  # 1-based, in the SQL as given (BEGIN; line blanked, not removed)
    assert not f.waived
    assert f in blocking(findings)
    # BEGIN;/COMMIT; of Alembic's offline SQL are not reported as transaction nesting
    assert "transaction-nesting" not in rules(findings)


def test_waived_finding_is_reported_but_not_blocking() -> None:
    source = (
        "def upgrade():\n"
        "    # orchestrator: allow require-concurrent-index-creation\n"
        "    op.create_index('ix_orders_user_id', 'orders', ['user_id'])\n"
    )
    findings = lint_revisions(
        {"7a1b2c3d4e5f": ALEMBIC_INDEX}, {"7a1b2c3d4e5f": parse_waivers(source)}, DEFAULT_EXCLUDE
    )
    [f] = [f for f in findings if f.rule == "require-concurrent-index-creation"]
    assert f.waived
    assert blocking(findings) == []


def test_harmless_create_table_and_nullable_column_pass_default_policy() -> None:
    sql = (
        "BEGIN;\n"
        "CREATE TABLE users (id SERIAL NOT NULL, name VARCHAR(100), "
        "created_at TIMESTAMP WITHOUT TIME ZONE, PRIMARY KEY (id));\n"
        "CREATE INDEX ix_users_name ON users (name);\n"
        "ALTER TABLE orders ADD COLUMN note text NULL;\n"
        "INSERT INTO alembic_version (version_num) VALUES ('5c626978d652');\n"
        "COMMIT;\n"
    )
    findings = lint_revisions({"5c626978d652": sql}, {}, DEFAULT_EXCLUDE)
    assert blocking(findings) == []


def test_concurrent_index_in_alembic_autocommit_block_passes() -> None:
    sql = (
        "BEGIN;\n"
        "ALTER TABLE orders ADD COLUMN note text;\n"
        "COMMIT;\n"
        "CREATE INDEX CONCURRENTLY ix_orders_note ON orders (note);\n"
        "BEGIN;\n"
        "UPDATE alembic_version SET version_num='r2';\n"
        "COMMIT;\n"
    )
    assert blocking(lint_revisions({"r2": sql}, {}, DEFAULT_EXCLUDE)) == []


def test_concurrent_index_inside_the_revision_transaction_is_flagged() -> None:
    sql = (
        "ALTER TABLE orders ADD COLUMN note text;\n"
        "CREATE INDEX CONCURRENTLY ix_orders_note ON orders (note);\n"
    )
    findings = lint_revisions({"r2": sql}, {}, DEFAULT_EXCLUDE)
    assert [(f.rule, f.line) for f in blocking(findings)] == [
        ("ban-concurrent-index-creation-in-transaction", 2)
    ]


def test_same_sql_without_excludes_reports_style_rules() -> None:
    sql = "CREATE TABLE users (id SERIAL PRIMARY KEY, created_at TIMESTAMP);\n"
    found = rules(lint_revisions({"r1": sql}, {}))
    assert {"prefer-identity", "prefer-timestamp-tz"} <= found


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        (
            "ALTER TABLE orders ADD CONSTRAINT fk_orders_user FOREIGN KEY (user_id) "
            "REFERENCES users (id);\n",
            "adding-foreign-key-constraint",
        ),
        ("ALTER TABLE orders ALTER COLUMN total TYPE numeric(12, 2);\n", "changing-column-type"),
        ("ALTER TABLE orders ADD COLUMN status text NOT NULL;\n", "adding-required-field"),
        ("ALTER TABLE orders ALTER COLUMN status SET NOT NULL;\n", "adding-not-nullable-field"),
        (
            "ALTER TABLE orders ADD COLUMN ref uuid DEFAULT gen_random_uuid();\n",
            "adding-field-with-default",
        ),
        ("DROP INDEX ix_orders_user_id;\n", "require-concurrent-index-deletion"),
        ("ALTER TABLE orders DROP COLUMN legacy;\n", "ban-drop-column"),
    ],
)
def test_dangerous_statements_are_blocking_under_default_policy(sql: str, rule: str) -> None:
    findings = lint_revisions({"abc123": sql}, {}, DEFAULT_EXCLUDE)
    assert rule in rules(blocking(findings))


def test_constant_default_on_not_null_column_is_fine_on_modern_postgres() -> None:
    # PostgreSQL 11+ adds a column with a constant default without rewriting the table
    sql = "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'new';\n"
    assert blocking(lint_revisions({"abc123": sql}, {}, DEFAULT_EXCLUDE)) == []


def test_exclude_removes_rule() -> None:
    sql = CREATE_INDEX + "ALTER TABLE orders ALTER COLUMN total TYPE bigint;\n"
    found = rules(lint_revisions({"r1": sql}, {}))
    assert {"require-concurrent-index-creation", "changing-column-type"} <= found
    found = rules(lint_revisions({"r1": sql}, {}, ("require-concurrent-index-creation",)))
    assert "require-concurrent-index-creation" not in found
    assert "changing-column-type" in found


def test_findings_map_to_their_revision_in_one_call() -> None:
    sql_by_revision = {
        "aaa111": "CREATE TABLE a (id bigint PRIMARY KEY);\n",
        "bbb222": "\n\n" + CREATE_INDEX,
        "ccc333": "ALTER TABLE orders ALTER COLUMN total TYPE bigint;\n",
        "ddd444": CREATE_INDEX,
    }
    findings = lint_revisions(
        sql_by_revision,
        {"ddd444": frozenset({"require-concurrent-index-creation"})},
        DEFAULT_EXCLUDE,
    )
    by_rev: dict[str, set[str]] = {}
    for f in findings:
        by_rev.setdefault(f.revision, set()).add(f.rule)
    assert "aaa111" not in by_rev
    assert by_rev["bbb222"] == {"require-concurrent-index-creation"}
    assert by_rev["ccc333"] == {"changing-column-type"}
    assert by_rev["ddd444"] == {"require-concurrent-index-creation"}
    [b] = [f for f in findings if f.revision == "bbb222"]
    assert b.line == 3 and not b.waived
    [d] = [f for f in findings if f.revision == "ddd444"]
    assert d.line == 1 and d.waived
    # ordered by input revision order
    assert [f.revision for f in findings] == ["bbb222", "ccc333", "ddd444"]
    assert {f.revision for f in blocking(findings)} == {"bbb222", "ccc333"}


def test_odd_revision_ids_are_safe_file_names() -> None:
    findings = lint_revisions({"../x y": CREATE_INDEX, "x_y": CREATE_INDEX}, {}, DEFAULT_EXCLUDE)
    assert sorted(f.revision for f in findings) == ["../x y", "x_y"]


def test_nothing_to_lint() -> None:
    assert lint_revisions({}, {}) == []
    assert lint_revisions({"r1": ""}, {}, DEFAULT_EXCLUDE) == []


def test_every_known_rule_is_accepted_by_squawk_and_ours_is_never_passed_to_it() -> None:
    # squawk rejects unknown rule names: this fails if a squawk upgrade renames one
    from orchestrator.core.lint_rules import KNOWN_RULES

    findings = lint_revisions({"r1": CREATE_INDEX}, {}, sorted(KNOWN_RULES))
    assert findings == []  # `unlintable` and the aliases were not handed to squawk


def test_a_name_that_is_no_rule_is_a_configuration_error() -> None:
    from orchestrator.core.config import parse_environment
    from orchestrator.core.errors import UsageError

    base = "name: prod\ndatabase: {url_env: X}\npolicy:\n"
    ok = parse_environment(
        base + "  lint_exclude: [unlintable, ban-drop-column]\n"
        '  lint_waivers: {"0e1234": [unlintable, prefer-timestamptz]}\n',
        "environments/prod.yaml",
    )
    assert ok.policy.lint_waivers == {"0e1234": ["unlintable", "prefer-timestamptz"]}
    for bad, named in [
        ("  lint_exclude: [ban-drop-colum]\n", "ban-drop-colum"),
        ('  lint_waivers: {"abc": [no-such-rule]}\n', "no-such-rule"),
        ("  lint_waivers: {123456: [unlintable]}\n", "quote the revision id"),
    ]:
        with pytest.raises(UsageError, match=named) as caught:
            parse_environment(base + bad, "environments/prod.yaml")
        assert "environments/prod.yaml" in str(caught.value)


def test_default_exclude_names_are_accepted_by_squawk() -> None:
    # squawk rejects unknown rule names: this fails if a squawk upgrade renames one
    lint_revisions({"r1": "SELECT 1;\n"}, {}, DEFAULT_EXCLUDE)
    assert "require-concurrent-index-creation" not in DEFAULT_EXCLUDE
