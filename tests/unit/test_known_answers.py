"""Known answers for every stored hash format: fixed inputs, digests written out here.

These digests are in databases already (audit rows, ledger checksums) and in the advisory lock
every running version takes. A change of format must be a decision someone makes, with a
migration of what was stored: so any change to these functions fails here first. The expected
values were computed with hashlib by hand, never with the functions under test.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.db.locks import DEFAULT_KEY, lock_id
from orchestrator.evidence import ledger
from orchestrator.migrations.revisions import (
    checksum_bytes,
    checksum_file,
    combined_checksum,
    read_revision_file,
)

# -- the audit chain ---------------------------------------------------------------------------

RUN_STARTED = {
    "timestamp": "2026-01-01T00:00:00.000000Z",
    "event": "run.started",
    "run_id": "r1",
    "env": "prod",
    "actor": "alice",
}
APPLIED = {
    "timestamp": "2026-01-01T00:00:01.000000Z",
    "event": "migration.applied",
    "run_id": "r1",
    "env": "prod",
    "actor": "alice",
    "revision": "5c626978d652",
    "checksum": "abc",
}
# canonical JSON: sorted keys, no spaces
PAYLOAD_1 = (
    '{"actor":"alice","env":"prod","event":"run.started","run_id":"r1",'
    '"timestamp":"2026-01-01T00:00:00.000000Z"}'
)
PAYLOAD_2 = (
    '{"actor":"alice","checksum":"abc","env":"prod","event":"migration.applied",'
    '"revision":"5c626978d652","run_id":"r1","timestamp":"2026-01-01T00:00:01.000000Z"}'
)
# sha256(prev_hash + "|" + id + "|" + payload)
HASH_1 = "06c1340dca50425e94d048df5a57c5b323188fe901ef7dfe89749f2ff1a6e0c1"
HASH_2 = "859d95d586a2271a4fd58d47607634a7d022eadbfac04723e732812c72193a99"


def test_genesis_is_sixty_four_zeros() -> None:
    assert ledger.GENESIS == "0000000000000000000000000000000000000000000000000000000000000000"


def test_canonical_payload_is_sorted_compact_json() -> None:
    assert ledger.canonical(RUN_STARTED) == PAYLOAD_1
    assert ledger.canonical(APPLIED) == PAYLOAD_2


def test_canonical_writes_what_json_cannot_hold_as_its_text() -> None:
    from datetime import UTC, datetime

    record = {"at": datetime(2026, 1, 1, tzinfo=UTC), "n": 1, "a": [None, True]}
    assert ledger.canonical(record) == '{"a":[null,true],"at":"2026-01-01 00:00:00+00:00","n":1}'


def test_chain_hash_known_answers() -> None:
    assert ledger.chain_hash(ledger.GENESIS, 1, PAYLOAD_1) == HASH_1
    assert ledger.chain_hash(HASH_1, 2, PAYLOAD_2) == HASH_2


def test_chain_hash_depends_on_each_part() -> None:
    assert ledger.chain_hash(HASH_2, 1, PAYLOAD_1) != HASH_1  # the previous row's hash
    assert ledger.chain_hash(ledger.GENESIS, 2, PAYLOAD_1) != HASH_1  # the row id
    assert ledger.chain_hash(ledger.GENESIS, 1, PAYLOAD_2) != HASH_1  # the content


def test_chain_rows_known_answers() -> None:
    rows = ledger.chain_rows([RUN_STARTED, APPLIED], 0, ledger.GENESIS)
    assert rows == [
        {
            "id": 1,
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "event": "run.started",
            "run_id": "r1",
            "env": "prod",
            "actor": "alice",
            "revision": None,
            "outcome": None,
            "payload": PAYLOAD_1,
            "prev_hash": ledger.GENESIS,
            "hash": HASH_1,
        },
        {
            "id": 2,
            "timestamp": "2026-01-01T00:00:01.000000Z",
            "event": "migration.applied",
            "run_id": "r1",
            "env": "prod",
            "actor": "alice",
            "revision": "5c626978d652",
            "outcome": None,
            "payload": PAYLOAD_2,
            "prev_hash": HASH_1,
            "hash": HASH_2,
        },
    ]
    # continuing a chain: the second row alone, after the first
    assert ledger.chain_rows([APPLIED], 1, HASH_1) == rows[1:]
    # the indexed columns come from the record: outcome and revision too
    (done,) = ledger.chain_rows([{**RUN_STARTED, "outcome": "succeeded"}], 2, HASH_2)
    assert (done["id"], done["outcome"], done["revision"], done["prev_hash"]) == (
        3,
        "succeeded",
        None,
        HASH_2,
    )
    assert ledger.verify_chain(rows) is None


def test_verify_rejects_a_row_whose_hash_is_not_the_known_answer() -> None:
    """A row hashed any other way (here: without the previous hash) does not verify."""
    import hashlib

    rows = ledger.chain_rows([RUN_STARTED], 0, ledger.GENESIS)
    rows[0]["hash"] = hashlib.sha256(f"1|{PAYLOAD_1}".encode()).hexdigest()
    broken = ledger.verify_chain(rows)
    assert broken is not None and broken.id == 1
    assert broken.problem == "its content does not match its hash"


# -- revision file checksums -----------------------------------------------------------------

LF = b"line one\nline two\n"
LF_SHA256 = "e9024f1a07d29d52ad3aa5e1a18e94db1f3a9fd32b89e39d47c472cd99071e13"
CR_SHA256 = "decfc5c46f333dc99737317edc1d99acb60d0c91c245bdcd30546c534718a1bb"  # b"...\r...\r"
A_CRLF_SHA256 = "8e4621379786ef42a4fec155cd525c291dd7db3c1fde3478522f4f61c03fd1bd"  # b"a\r\n"


def test_checksum_known_answers() -> None:
    assert checksum_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert checksum_bytes(LF) == LF_SHA256
    assert checksum_bytes(b"line one\r\nline two\r\n") == LF_SHA256  # CRLF counts as LF
    assert checksum_bytes(b"line one\rline two\r") == CR_SHA256  # a lone CR is kept
    assert checksum_bytes(b"a\r\r\n") == A_CRLF_SHA256  # one CRLF -> LF, the CR before stays


def test_checksum_file_known_answers(tmp_path: Path) -> None:
    lf, crlf = tmp_path / "lf.py", tmp_path / "crlf.py"
    lf.write_bytes(LF)
    crlf.write_bytes(b"line one\r\nline two\r\n")
    assert checksum_file(lf) == LF_SHA256
    assert checksum_file(crlf) == LF_SHA256


REVISION = (
    b'revision = "aaaaaaaaaaaa"\r\ndown_revision = None\r\n\r\n\r\ndef upgrade():\r\n    pass\r\n'
)
# of its LF form
REVISION_SHA256 = "e810abf3dde5b6470576f9a2955a9206bba3e2b436048763535813a42ae5864d"


def test_revision_file_checksum_is_the_known_answer(tmp_path: Path) -> None:
    path = tmp_path / "aaaaaaaaaaaa_x.py"
    path.write_bytes(REVISION)
    rf = read_revision_file(path)
    assert rf is not None
    assert rf.checksum == REVISION_SHA256


# sha256 of '["<own>",[["app/a.py","11..."],["app/b.py","22..."]]]' (pairs sorted by path)
COMBINED_SHA256 = "c644a5adcc9759f585bbfc1cc454a710dcd96b43903fd4cbd83cc4c85e8fa27b"


def test_combined_checksum_known_answers() -> None:
    """A revision's checksum with the project modules it imports."""
    assert combined_checksum(LF_SHA256, {}) == LF_SHA256  # no module: the file's own digest
    modules = {"app/b.py": "2" * 64, "app/a.py": "1" * 64}  # any order in, sorted by path
    assert combined_checksum(LF_SHA256, modules) == COMBINED_SHA256


# -- the advisory lock id ----------------------------------------------------------------------


def test_lock_id_known_answers() -> None:
    """Two versions of the orchestrator must take the same lock for the same key."""
    assert DEFAULT_KEY == "alembic-orchestrator"
    assert lock_id(DEFAULT_KEY) == -1042893561166871749
    assert lock_id("tenant-42") == -640294816705647416
