"""The pure evidence chain (SPEC Part 3): build entries, verify a chain, on inline data."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.core import chain

KEY = Ed25519PrivateKey.generate()
KEYS = [KEY.public_key()]
DEV = Ed25519PrivateKey.generate()  # another environment's key
DB = "7301/app"


def up(rev: str, direction: str = "up") -> dict[str, Any]:
    return {"revision": rev, "checksum": "c" * 64, "direction": direction, "run_id": "r1"}


def build(contents: list[tuple[str, dict[str, Any]]], key: Any = KEY, env: str = "staging"):
    rows, prev = [], chain.GENESIS
    for seq, (kind, content) in enumerate(contents, 1):
        row = chain.build_entry(
            key, env=env, database=DB, seq=seq, prev=prev, kind=kind, content=content
        )
        rows.append(row)
        prev = row["hash"]
    return rows


def check(rows, **kw: Any) -> chain.Verdict:
    return chain.verify_chain(rows, KEYS, env="staging", database=DB, **kw)


def test_an_intact_chain_proves_its_ledger_rows_and_head() -> None:
    rows = build([("ledger", up("a")), ("ledger", up("b")), ("end", {"run_id": "r1"})])
    verdict = check(rows)
    assert verdict.ok and verdict.head == (3, rows[2]["hash"])
    assert [r["revision"] for r in chain.ledger_rows(verdict)] == ["a", "b"]
    assert check([]).ok and check([]).head is None


def test_a_deleted_middle_entry_is_named() -> None:
    rows = build([("ledger", up("a")), ("ledger", up("b")), ("ledger", up("c"))])
    verdict = check([rows[0], rows[2]])
    assert verdict.broken is not None and verdict.broken[0] == 2
    assert "entry 2 is missing" in verdict.broken[1]


def test_an_older_entry_replayed_under_a_new_seq_is_named() -> None:
    rows = build([("ledger", up("a")), ("ledger", up("a", "down"))])
    replay = {**rows[0], "seq": 2}  # the old `up` put where the `down` was
    verdict = check([rows[0], replay])
    assert verdict.broken is not None and verdict.broken[0] == 2
    assert "replayed" in verdict.broken[1]


def test_an_entry_signed_for_another_database_or_env_is_refused() -> None:
    rows = build([("ledger", up("a"))], env="dev")
    verdict = check(rows)
    assert verdict.broken == (1, verdict.broken[1]) and "copied" in verdict.broken[1]


def test_entries_relinked_without_the_key_fail_at_the_first_forged_one() -> None:
    rows = build([("ledger", up("a")), ("ledger", up("b"))])
    # rebuild from entry 2 on with another key (the deploy role holds no signing key)
    forged = chain.build_entry(
        DEV, env="staging", database=DB, seq=2, prev=rows[0]["hash"], kind="ledger",
        content=up("evil"),
    )  # fmt: skip
    tail = chain.build_entry(
        DEV, env="staging", database=DB, seq=3, prev=forged["hash"], kind="end", content={}
    )
    verdict = check([rows[0], forged, tail])
    assert verdict.broken is not None and verdict.broken[0] == 2
    assert "signature" in verdict.broken[1]
    assert [e.seq for e in verdict.entries] == [1]


def test_an_altered_kind_column_or_garbage_envelope_is_named() -> None:
    rows = build([("ledger", up("a")), ("end", {})])
    assert check([rows[0], {**rows[1], "kind": "ledger"}]).broken[0] == 2  # type: ignore[index]
    assert check([{**rows[0], "envelope": "{"}, rows[1]]).broken[0] == 1  # type: ignore[index]


def test_a_signed_repair_gives_up_the_broken_span_and_the_chain_goes_on() -> None:
    rows = build([("ledger", up("a")), ("ledger", up("b")), ("ledger", up("c"))])
    damaged = [rows[0], rows[2]]  # entry 2 deleted
    repair = chain.build_entry(
        KEY, env="staging", database=DB, seq=4, prev=rows[0]["hash"], kind="repair",
        content={"broken_from": 2, "reason": "restored"},
    )  # fmt: skip
    after = chain.build_entry(
        KEY, env="staging", database=DB, seq=5, prev=repair["hash"], kind="ledger",
        content=up("d"),
    )  # fmt: skip
    verdict = check([*damaged, repair, after])
    assert verdict.ok, verdict.broken
    assert [r["revision"] for r in chain.ledger_rows(verdict)] == ["a", "d"]  # b, c given up
    assert verdict.doubted == {("c", 4)}  # named in the given-up span: not run there
    assert verdict.given_up == [(2, 3)]
    # a repair signed with another key repairs nothing
    forged = {
        **repair,
        "envelope": json.dumps({**json.loads(repair["envelope"]), "signatures": []}),
    }
    assert check([*damaged, forged, after]).broken[0] == 2  # type: ignore[index]


def test_witnessed_heads_catch_a_rollback_and_a_divergence() -> None:
    rows = build([("ledger", up("a")), ("ledger", up("b")), ("ledger", up("a", "down"))])
    seen = chain.Head("staging", DB, 3, rows[2]["hash"], "2026-03-01T10:00:00Z")
    assert chain.witnessed_problem(check(rows), seen, "staging", "prod") is None
    shorter = check(rows[:2])  # the `down` entry deleted: the chain is still well formed
    assert shorter.ok
    problem = chain.witnessed_problem(shorter, seen, "staging", "prod")
    assert problem is not None
    assert "staging's evidence was rolled back below entry 3, which prod saw on 2026-03-01" in (
        problem
    )
    other = build([("ledger", up("a")), ("ledger", up("b")), ("ledger", up("b", "down"))])
    assert "diverges at entry 3" in str(chain.witnessed_problem(check(other), seen, "s", "p"))


def test_a_trusted_head_skips_the_signature_check() -> None:
    rows = build([("ledger", up("a"))])
    stripped = {**rows[0], "envelope": rows[0]["envelope"].replace('"sig":"', '"sig":"AA')}
    assert not check([stripped]).ok
    assert check([stripped], trusted=(1, rows[0]["hash"])).ok


def test_the_gate_refuses_a_staging_row_signed_with_devs_key() -> None:
    """A less-guarded pipeline holds dev's key: a row it signs is no evidence of staging's."""
    from orchestrator.core import planning
    from orchestrator.evidence import ledger

    def state(key: Any) -> planning.TargetState:
        row = ledger.revision_row(
            revision="a", checksum="c" * 64, direction="up", run_id="r1", env="staging",
            actor="ci", at="2026-01-01T00:00:00Z", key=key, target="staging",
        )  # fmt: skip
        entry = ledger.latest_of([row])
        return planning.TargetState("staging", frozenset({"a"}), entry, tuple(KEYS), "staging")

    assert planning.gate(["a"], {"a": "c" * 64}, "staging", [state(KEY)])[0].verdict == "allowed"
    step = planning.gate(["a"], {"a": "c" * 64}, "staging", [state(DEV)])[0]
    assert step.blocked and "not signed by staging's key" in str(step.reason)


def test_an_envelope_whose_signature_covers_other_bytes_than_it_shows_is_refused() -> None:
    """A second "payload" key: the fast read sees the forged one, JSON the signed one."""
    rows = build([("ledger", up("a"))])
    genuine = json.loads(rows[0]["envelope"])
    forged_payload = chain.entry_payload(
        env="staging", database=DB, seq=1, prev=chain.GENESIS, kind="ledger", content=up("evil")
    )
    import base64

    forged_b64 = base64.b64encode(forged_payload).decode()
    signatures = json.dumps(genuine["signatures"])
    text = (
        f'{{"payload":"{forged_b64}","payloadType":"{chain.ENTRY_TYPE}",'
        f'"signatures":{signatures},"payload":"{genuine["payload"]}"}}'
    )
    verdict = check([{**rows[0], "envelope": text}])
    assert verdict.broken is not None and verdict.broken[0] == 1


def test_a_reader_goes_on_from_a_witnessed_head_with_what_the_chain_proved_up_to_it() -> None:
    """A successor signs, with the head it witnessed, what the chain proved up to it; its
    next read starts at that head: entries before it are neither read nor needed, what
    they proved (newest entry per revision, the audit pin) still counts."""
    rows = build(
        [
            ("ledger", up("a")),
            ("ledger", up("b")),
            ("end", {"run_id": "r1", "audit_id": 7, "audit_hash": "h7", "open": ["r0"]}),
            ("ledger", up("b", "down")),
            ("ledger", up("c")),
        ]
    )
    full = check(rows[:3])
    seen = chain.Head("staging", DB, 3, rows[2]["hash"], None, chain.snapshot(full))
    verdict = chain.continue_chain(rows[2:], KEYS, env="staging", database=DB, witnessed=seen)
    assert verdict is not None and verdict.ok and verdict.head == (5, rows[4]["hash"])
    newest = {r["revision"]: r["direction"] for r in chain.ledger_rows(verdict)}
    assert newest == {r["revision"]: r["direction"] for r in chain.ledger_rows(check(rows))}
    assert newest == {"a": "up", "b": "down", "c": "up"}
    pin = chain.last_end(verdict)
    assert pin is not None and pin.content["audit_id"] == 7
    assert pin.content["open"] == ["r0"]
    # a forged entry after the head is still caught, by its own seq
    forged = {**rows[4], "envelope": rows[4]["envelope"].replace('"sig":"', '"sig":"AA')}
    broken = chain.continue_chain(
        [*rows[2:4], forged], KEYS, env="staging", database=DB, witnessed=seen
    )
    assert broken is not None and broken.broken is not None and broken.broken[0] == 5


def test_a_witnessed_head_that_is_gone_or_other_means_reading_it_all() -> None:
    rows = build([("ledger", up("a")), ("ledger", up("b")), ("ledger", up("c"))])
    seen = chain.Head("staging", DB, 2, rows[1]["hash"], None, chain.snapshot(check(rows[:2])))
    go_on = chain.continue_chain
    assert go_on(rows[2:], KEYS, env="staging", database=DB, witnessed=seen) is None  # gone
    other = build([("ledger", up("a")), ("ledger", up("x")), ("ledger", up("c"))])
    assert go_on(other[1:], KEYS, env="staging", database=DB, witnessed=seen) is None
    no_snapshot = chain.Head("staging", DB, 2, rows[1]["hash"])
    assert go_on(rows[1:], KEYS, env="staging", database=DB, witnessed=no_snapshot) is None
    repaired = [*rows[1:], {**rows[2], "seq": 4, "kind": "repair"}]
    assert go_on(repaired, KEYS, env="staging", database=DB, witnessed=seen) is None
