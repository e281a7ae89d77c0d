"""The pure gate (SPEC "The promotion gate"): plain data in, verdicts and messages out."""

from __future__ import annotations

import pytest

from orchestrator.core.planning import (
    LedgerEntry,
    Step,
    TargetState,
    drift,
    gate,
    ledger_heads,
    refusal_message,
)

A, B, C = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
SUM = {A: "a" * 64, B: "b" * 64, C: "c" * 64}


def entry(rev: str, direction: str = "up", checksum: str | None = None) -> LedgerEntry:
    return LedgerEntry(rev, SUM[rev] if checksum is None else checksum, direction, "r1", "t")


def ran(name: str, *revs: str, **ledger: LedgerEntry) -> TargetState:
    """A predecessor database at `revs` (applied), its ledger recording each of them."""
    book = {r: entry(r) for r in revs}
    book.update(ledger)
    return TargetState(name, frozenset(revs), book)


def test_ledger_entry_applied_by_direction() -> None:
    assert entry(A, "up").applied and entry(A, "baseline").applied
    assert not entry(A, "down").applied


def test_step_blocked_by_verdict() -> None:
    assert Step(A, "blocked", "why").blocked
    assert not Step(A, "allowed").blocked


def test_no_predecessor_allows_everything() -> None:
    assert gate([A, B], SUM, None, []) == [Step(A, "allowed"), Step(B, "allowed")]


def test_a_predecessor_without_databases_blocks_everything() -> None:
    assert gate([A], SUM, "staging", []) == [
        Step(A, "blocked", "staging has no database configured")
    ]


def test_allowed_only_what_the_predecessor_applied_with_the_same_checksum() -> None:
    steps = gate([A, B], SUM, "staging", [ran("staging", A)])
    assert steps == [Step(A, "allowed"), Step(B, "blocked", "not run on staging")]


def test_rolled_back_on_the_predecessor() -> None:
    staging = ran("staging", A, **{B: entry(B, "down")})
    assert gate([B], SUM, "staging", [staging]) == [Step(B, "blocked", "rolled back on staging")]


def test_applied_but_not_in_the_ledger() -> None:
    staging = TargetState("staging", frozenset({A}), {})
    (step,) = gate([A], SUM, "staging", [staging])
    assert step == Step(
        A,
        "blocked",
        "not recorded in staging's ledger (migrated outside the orchestrator: adopt it with "
        "`orchestrator baseline`)",
    )


def test_applied_while_its_last_ledger_row_is_a_downgrade() -> None:
    """alembic_version says applied, the ledger's last word is `down`: not trusted."""
    staging = TargetState("staging", frozenset({A}), {A: entry(A, "down")})
    (step,) = gate([A], SUM, "staging", [staging])
    assert step.blocked and step.reason is not None and "not recorded in staging's" in step.reason


def test_baseline_counts_as_run() -> None:
    staging = TargetState("staging", frozenset({A}), {A: entry(A, "baseline")})
    assert gate([A], SUM, "staging", [staging]) == [Step(A, "allowed")]


def test_edited_since_the_predecessor_ran_it() -> None:
    staging = ran("staging", A, **{A: entry(A, checksum="d" * 64)})
    (step,) = gate([A], SUM, "staging", [staging])
    assert step == Step(
        A,
        "blocked",
        f"edited since staging ran it (checksum {'d' * 12} there, {'a' * 12} now)",
    )


def test_every_database_of_a_fleet_predecessor_must_have_run_it() -> None:
    fleet = [ran("t1", A, B), ran("t2", A), ran("t3", A)]
    steps = gate([A, B], SUM, "staging", fleet)
    assert steps == [
        Step(A, "allowed"),
        Step(B, "blocked", "not run on staging (t2, t3)"),
    ]


def test_a_fleet_names_each_reason_with_its_databases() -> None:
    fleet = [
        ran("t1", A, **{B: entry(B, "down")}),
        ran("t2", A),
        ran("t3", A, B, **{B: entry(B, checksum="e" * 64)}),
    ]
    (step,) = gate([B], SUM, "staging", fleet)
    assert step.reason == (
        "rolled back on staging (t1); not run on staging (t2); "
        f"edited since staging (t3) ran it (checksum {'e' * 12} there, {'b' * 12} now)"
    )


def test_one_database_named_like_its_environment_is_not_repeated() -> None:
    (step,) = gate([B], SUM, "staging", [ran("staging", A)])
    assert step.reason == "not run on staging"
    (step,) = gate([B], SUM, "staging", [ran("eu", A)])
    assert step.reason == "not run on staging (eu)"


def test_drift_lists_applied_revisions_whose_file_changed_sorted() -> None:
    applied = frozenset({A, B, C})
    ledger = {
        C: entry(C, checksum="0" * 64),
        A: entry(A, checksum="1" * 64),
        B: entry(B),
    }
    assert drift(applied, ledger, SUM) == [A, C]


@pytest.mark.parametrize(
    ("applied", "ledger", "checksums"),
    [
        (frozenset(), {A: entry(A, checksum="0" * 64)}, SUM),  # not applied here now
        (frozenset({A}), {}, SUM),  # no ledger row: nothing to compare with
        (frozenset({A}), {A: entry(A, "down", "0" * 64)}, SUM),  # last row: reverted
        (frozenset({A}), {A: entry(A, checksum="0" * 64)}, {}),  # no file for it any more
        (frozenset({A}), {A: entry(A)}, SUM),  # the same file
    ],
    ids=["not-applied", "no-ledger", "reverted", "no-file", "same"],
)
def test_no_drift(applied: frozenset[str], ledger: dict, checksums: dict) -> None:
    assert drift(applied, ledger, checksums) == []


def test_baseline_rows_count_for_drift() -> None:
    assert drift(frozenset({A}), {A: entry(A, "baseline", "0" * 64)}, SUM) == [A]


def test_refusal_message_names_each_blocked_revision_and_what_to_do() -> None:
    steps = [Step(A, "allowed"), Step(B, "blocked", "not run on staging"), Step(C, "blocked", "x")]
    assert refusal_message("prod", "staging", steps) == (
        "Refused: prod may only run revisions that staging has run with the same script. "
        f"Blocked 2 of 3: {B}: not run on staging; {C}: x. Migrate staging first "
        "(or `orchestrator promote prod` to go exactly as far as staging)."
    )


def test_refusal_message_for_one_database_of_a_fleet_promotes_the_environment() -> None:
    message = refusal_message("prod/acme", "staging", [Step(A, "blocked", "why")])
    assert message.startswith("Refused: prod/acme may only run")
    assert "`orchestrator promote prod` to go" in message
    message = refusal_message("prod/eu/west", "staging", [Step(A, "blocked", "why")])
    assert "`orchestrator promote prod` to go" in message  # the environment: before the first /


# -- ledger_heads: where the ledger says a database is -------------------------------------------

# a <- b <- c, and a <- d (a second branch), merged by m (b, d)
PARENTS: dict[str, tuple[str, ...]] = {"a": (), "b": ("a",), "c": ("b",), "d": ("a",)}
PARENTS["m"] = ("b", "d")


def _ancestors(rev: str) -> set[str]:
    found = {rev}
    for parent in PARENTS[rev]:
        found |= _ancestors(parent)
    return found


def heads(*rows: tuple[str, str, str]) -> frozenset[str] | None:
    return ledger_heads(list(rows), lambda r: PARENTS[r], _ancestors)


def test_ledger_heads_of_no_rows_is_none() -> None:
    assert heads() is None


def test_ledger_heads_follow_ups_and_downs() -> None:
    assert heads(("a", "up", "r1"), ("b", "up", "r1"), ("c", "up", "r1")) == {"c"}
    assert heads(("a", "up", "r1"), ("b", "up", "r1"), ("b", "down", "r2")) == {"a"}
    assert heads(("a", "up", "r1"), ("a", "down", "r2")) == frozenset()  # back to base
    assert heads(("a", "up", "r1"), ("b", "up", "r1"), ("x", "other", "r2")) == {"b"}


def test_ledger_heads_of_branches_and_a_merge() -> None:
    branches = [("a", "up", "r1"), ("b", "up", "r1"), ("d", "up", "r1")]
    assert heads(*branches) == {"b", "d"}
    assert heads(*branches, ("m", "up", "r2")) == {"m"}
    assert heads(*branches, ("m", "up", "r2"), ("m", "down", "r3")) == {"b", "d"}
    # down one branch: its parent `a` comes back, but below the other head: only the tip
    assert heads(*branches, ("d", "down", "r2")) == {"b"}


def test_ledger_heads_baseline_and_stamp_set_the_position_per_run() -> None:
    baseline = [("a", "baseline", "r1"), ("b", "baseline", "r1"), ("c", "baseline", "r1")]
    assert heads(*baseline) == {"c"}  # every ancestor listed: the tip
    assert heads(*baseline, ("a", "baseline", "r2")) == {"a"}  # a new run's baseline resets
    assert heads(*baseline, ("base", "stamped", "r2")) == frozenset()  # stamped to base
    assert heads(("a", "up", "r1"), ("c", "stamped", "r2")) == {"c"}
    # an up between two groups of the same run's rows: the second group starts afresh
    assert heads(("a", "baseline", "r1"), ("b", "up", "r2"), ("d", "baseline", "r1")) == {"d"}
    assert heads(("a", "baseline", "r1"), ("b", "up", "r2")) == {"b"}
