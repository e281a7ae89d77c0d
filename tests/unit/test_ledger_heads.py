"""planning.ledger_heads: where the ledger says a database is (status's version check)."""

from __future__ import annotations

from orchestrator.core.planning import ledger_heads

PARENTS = {"a": (), "b": ("a",), "c": ("b",), "d": ("c",)}


def parents(rev: str) -> tuple[str, ...]:
    return PARENTS.get(rev, ())


def ancestors(rev: str) -> set[str]:
    out, todo = set(), [rev]
    while todo:
        r = todo.pop()
        if r not in out:
            out.add(r)
            todo.extend(parents(r))
    return out


def heads(*rows: tuple[str, str, str]) -> frozenset[str] | None:
    return ledger_heads(list(rows), parents, ancestors)


def test_no_rows_says_nothing() -> None:
    assert heads() is None


def test_ups_and_downs_move_one_revision() -> None:
    assert heads(("a", "up", "r1"), ("b", "up", "r1"), ("c", "up", "r1")) == {"c"}
    assert heads(("a", "up", "r1"), ("b", "up", "r1"), ("b", "down", "r2")) == {"a"}
    assert heads(("a", "up", "r1"), ("a", "down", "r2")) == frozenset()


def test_a_baseline_sets_the_position_to_its_tip() -> None:
    assert heads(("a", "baseline", "r1"), ("b", "baseline", "r1"), ("c", "baseline", "r1")) == {"c"}


def test_a_stamp_sets_the_position_backwards_or_forwards() -> None:
    ran = [("a", "up", "r1"), ("b", "up", "r1"), ("c", "up", "r1")]
    assert heads(*ran, ("a", "stamped", "r2")) == {"a"}
    assert heads(*ran, ("base", "stamped", "r2")) == frozenset()
    assert heads(*ran, ("a", "stamped", "r2"), ("b", "up", "r3")) == {"b"}
    assert heads(("d", "stamped", "r1")) == {"d"}


def test_two_stamps_in_a_row_are_two_positions() -> None:
    assert heads(("a", "stamped", "r1"), ("c", "stamped", "r2")) == {"c"}
