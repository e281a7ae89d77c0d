"""The predecessor's schema from the gate's one batch of reads: believed only where it is
exactly what the step-by-step read would find (the recorded row at the current heads whose
catalog stamp is the live one); any doubt leaves it to that read."""

from __future__ import annotations

from typing import Any

from orchestrator.core.config import Target
from orchestrator.running.predecessor_batch import Batch

DEV = Target("dev", "dev", "postgresql+psycopg://127.0.0.1/dev")


def _row(**changes: Any) -> dict[str, Any]:
    row = {
        "id": 7,
        "heads": "a1,b2",
        "fingerprint": "f" * 64,
        "stamp": "3:12 345",
        "run_id": "r1",
        "env": "dev",
        "actor": "ci",
        "at": "2026-12-07T00:00:00Z",
        "envelope": None,
    }
    return {k: v for k, v in (row | changes).items() if v is not ...}


def _batch(*rows: dict[str, Any], stamp: str = "3:12 345") -> Batch:
    return Batch(("a1", "b2"), [], None, recorded=list(rows), stamp=stamp)


def test_the_recorded_schema_with_the_live_stamp_is_the_live_schema() -> None:
    assert _batch(_row()).schema(None, DEV) == (("a1", "b2"), "postgresql", "f" * 64)


def test_the_newest_row_counts_where_nothing_is_signed() -> None:
    newer = _row(id=8, fingerprint="e" * 64)
    assert _batch(newer, _row()).schema(None, DEV) == (("a1", "b2"), "postgresql", "e" * 64)


def test_a_moved_stamp_or_none_recorded_leaves_it_to_the_full_read() -> None:
    assert _batch(_row(), stamp="3:13 999").schema(None, DEV) is None
    assert _batch(_row(stamp=None)).schema(None, DEV) is None
    assert _batch().schema(None, DEV) is None
    assert Batch(("a1",), [], None).schema(None, DEV) is None  # not asked for


def test_rows_at_other_heads_or_without_a_column_leave_it_to_the_full_read() -> None:
    assert _batch(_row(heads="a1")).schema(None, DEV) is None  # alembic_version moved
    assert _batch(_row(run_id=...)).schema(None, DEV) is None  # a column gone


def test_a_signing_predecessor_believes_only_a_row_whose_signature_verifies() -> None:
    assert _batch(_row()).schema(["not a key"], DEV) is None  # unsigned rows: skipped
    assert _batch(_row(envelope=...)).schema(["not a key"], DEV) is None  # no such column
