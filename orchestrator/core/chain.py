"""Pure: a database's evidence as one signed, hash-linked history (SPEC Part 3).

Each entry is a DSSE envelope over {env, database, seq, prev, kind, content}: `seq` counts
1, 2, 3... with no gap, `prev` is the sha256 of the previous entry's payload (GENESIS for the
first), `database` is an identity the deploy role does not choose. An entry's hash is the
sha256 of its payload bytes, so the newest entry's signature vouches for every entry before
it: a reader checks every link (cheap hashes) and one signature, and looks at each signature
only to name the first bad entry when the newest does not verify.

Kinds: `ledger` (content: a ledger row), `end` (a run's end: the audit chain's last row it
proved, the predecessor heads it relied on), `repair` (the explicit way on after a break:
the span it gives up, why, who), `moved` (an existing install's Part 2 rows brought in).

    entry = build_entry(key, env="staging", database="7301.../app", seq=1, prev=GENESIS,
                        kind="ledger", content={...})
    verdict = verify_chain(rows, [public_key], env="staging", database="7301.../app")
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cryptography is slow to import: only where something is signed
    from orchestrator.core import signing

ENTRY_TYPE = "application/vnd.alembic-orchestrator.evidence.chain-entry+json"
GENESIS = "0" * 64
KINDS = ("ledger", "end", "repair", "moved")


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_payload(
    *, env: str, database: str, seq: int, prev: str, kind: str, content: Mapping[str, Any]
) -> bytes:
    return canonical_bytes(
        {
            "env": env,
            "database": database,
            "seq": seq,
            "prev": prev,
            "kind": kind,
            "content": dict(content),
        }
    )


def build_entry(
    key: signing.PrivateKey,
    *,
    env: str,
    database: str,
    seq: int,
    prev: str,
    kind: str,
    content: Mapping[str, Any],
) -> dict[str, Any]:
    """The stored row of one entry: seq, kind, run_id, envelope, hash."""
    from orchestrator.core import signing

    payload = entry_payload(
        env=env, database=database, seq=seq, prev=prev, kind=kind, content=content
    )
    envelope = signing.sign(ENTRY_TYPE, payload, key)
    return {
        "seq": seq,
        "kind": kind,
        "run_id": str(content.get("run_id") or ""),
        "envelope": json.dumps(envelope, sort_keys=True, separators=(",", ":")),
        "hash": hashlib.sha256(payload).hexdigest(),
    }


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    content: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class Head:
    """A chain's newest entry as someone saw it: what a successor witnesses."""

    env: str
    database: str
    seq: int
    hash: str
    at: str | None = None  # when it was seen
    # what the chain proved up to this head (`snapshot`): where a successor witnessed it,
    # its next read starts here instead of at entry 1
    snapshot: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"env": self.env, "database": self.database, "seq": self.seq, "hash": self.hash}
        return out | ({"at": self.at} if self.at else {})


@dataclass(frozen=True)
class Verdict:
    """`entries`: what the chain proves, oldest first (a repaired span left out); `broken`:
    (first bad seq, why) or None; `head`: (seq, hash) of the newest good entry."""

    entries: list[Entry] = field(default_factory=list)
    broken: tuple[int, str] | None = None
    head: tuple[int, str] | None = None
    given_up: list[tuple[int, int]] = field(default_factory=list)  # spans repairs gave up
    # (revision, repair seq): an entry of a span that repair gave up names the revision
    # (read, not believed): its evidence before the repair does not count
    doubted: frozenset[tuple[str, int]] = frozenset()

    @property
    def ok(self) -> bool:
        return self.broken is None


class _Bad(Exception):
    pass


# What `build_entry` stores begins so (sorted keys, compact): the payload is cut out without
# parsing the envelope, half the cost of reading a long chain. Whatever else is stored takes
# the full parse; a signature is checked only against the very bytes read here (_signed_ok).
_HEAD = '{"payload":"'
_TYPE = '","payloadType":"' + ENTRY_TYPE + '","signatures":'


def _payload_text(envelope: str) -> str:
    if envelope.startswith(_HEAD):
        end = envelope.find('"', len(_HEAD))
        if end > 0 and envelope.startswith(_TYPE, end):
            return envelope[len(_HEAD) : end]
    parsed = json.loads(envelope)
    if parsed.get("payloadType") != ENTRY_TYPE:
        raise _Bad("it is not a chain entry")
    return str(parsed["payload"])


def _open(row: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The signed payload of a stored row (signature not checked), or _Bad."""
    try:
        payload = base64.b64decode(_payload_text(row["envelope"]), validate=True)
        signed = json.loads(payload)
    except _Bad:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise _Bad("it is not a signed entry (its envelope does not parse)") from None
    if not isinstance(signed, dict) or not isinstance(signed.get("content"), dict):
        raise _Bad("its signed payload is not an entry")
    return signed, payload


def _signed_ok(row: Mapping[str, Any], keys: Sequence[signing.PublicKey]) -> str | None:
    from orchestrator.core import signing

    verdict = signing.verify(row["envelope"], keys, ENTRY_TYPE)
    if not verdict.valid:
        return f"its signature does not verify ({verdict.reason})"
    try:
        read = _open(row)[1]
    except _Bad as exc:
        return str(exc)
    if verdict.payload != read:  # e.g. a second "payload" key: what was signed is not it
        return "what its signature covers is not what it says"
    return None


def verify_chain(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[signing.PublicKey],
    *,
    env: str,
    database: str,
    trusted: tuple[int, str] | None = None,
    start: tuple[int, str] | None = None,
) -> Verdict:
    """Check stored entry rows (seq, kind, envelope; ordered by seq) as one chain.

    `trusted` (seq, hash): a head whose signature a reader already checked (one its own
    environment witnessed): when the newest entry is that one, no signature is checked at all.
    `start` (seq, hash): `rows` continue a chain already verified up to that entry.
    A break is repaired only by a `repair` entry (signature checked on its own) that links to
    the last good entry and names the first bad seq: the span between is given up.
    """
    repairs = _repairs(rows, keys, env, database)
    entries: list[Entry] = []
    given_up: list[tuple[int, int]] = []
    doubted: set[tuple[str, int]] = set()
    prev, expected = GENESIS, 1
    if start is not None:
        expected, prev = start[0] + 1, start[1]
    last_row: Mapping[str, Any] | None = None
    index = 0
    while index < len(rows):
        row = rows[index]
        problem, opened = _link_problem(row, expected, prev, env, database)
        if problem is not None or opened is None:
            repair = repairs.get((expected, prev))
            if repair is None:
                return Verdict(
                    entries, (expected, problem or "unreadable"), _head(entries) or start,
                    given_up,
                    frozenset(doubted),
                )  # fmt: skip
            # jump to the repair entry: what lay between is no evidence
            skipped = [r for r in rows[index:] if r["seq"] < repair]
            doubted |= {(_named_revision(r), repair) for r in skipped}
            index = next(i for i, r in enumerate(rows) if r["seq"] == repair)
            given_up.append((expected, repair - 1))
            expected = repair
            continue
        signed, payload = opened
        digest = hashlib.sha256(payload).hexdigest()
        entries.append(Entry(expected, signed["kind"], signed["content"], digest))
        prev, expected, last_row = digest, expected + 1, row
        index += 1
    checked = trusted is not None and trusted == (entries[-1].seq if entries else 0, prev)
    if last_row is not None and not checked and _signed_ok(last_row, keys) is not None:
        # someone re-linked entries without the key: name the first whose signature fails
        for entry, row in zip(entries, _rows_of(rows, entries), strict=True):
            problem = _signed_ok(row, keys)
            if problem is not None:
                good = [e for e in entries if e.seq < entry.seq]
                return Verdict(
                    good, (entry.seq, problem), _head(good), given_up, frozenset(doubted)
                )
    return Verdict(entries, None, _head(entries) or start, given_up, frozenset(doubted))


def _named_revision(row: Mapping[str, Any]) -> str:
    """The revision a stored entry says it is about, without believing it ('' if none)."""
    try:
        signed, _ = _open(row)
    except _Bad:
        return ""
    return str(signed["content"].get("revision") or "")


def _rows_of(rows: Sequence[Mapping[str, Any]], entries: Sequence[Entry]) -> list[Any]:
    by_seq = {row["seq"]: row for row in rows}
    return [by_seq[e.seq] for e in entries]


def _head(entries: Sequence[Entry]) -> tuple[int, str] | None:
    return (entries[-1].seq, entries[-1].hash) if entries else None


def _link_problem(
    row: Mapping[str, Any], expected: int, prev: str, env: str, database: str
) -> tuple[str | None, tuple[dict[str, Any], bytes] | None]:
    """Why `row` does not fit at `expected` after `prev` (None: it does), and what it
    signed (read once)."""
    if row["seq"] != expected:
        return (
            f"entry {expected} is missing (the next stored entry is {row['seq']})"
            if row["seq"] > expected
            else f"entry {row['seq']} appears twice"
        ), None
    try:
        opened = _open(row)
    except _Bad as exc:
        return str(exc), None
    return _fits(opened[0], row, expected, prev, env, database), opened


def _fits(
    signed: Mapping[str, Any],
    row: Mapping[str, Any],
    expected: int,
    prev: str,
    env: str,
    database: str,
) -> str | None:
    if signed.get("env") != env or signed.get("database") != database:
        return (
            f"it was signed for {signed.get('env')} on database {signed.get('database')}, "
            f"not {env} on {database} (copied from another database)"
        )
    if signed.get("seq") != expected:
        return f"it was signed as entry {signed.get('seq')} (an entry replayed out of place)"
    if signed.get("prev") != prev:
        return (
            "its link to the entry before does not match (entries removed, replaced or reordered)"
        )
    if signed.get("kind") not in KINDS or signed.get("kind") != row.get("kind"):
        return "its kind differs from what was signed"
    return None


def _repairs(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[signing.PublicKey],
    env: str,
    database: str,
) -> dict[tuple[int, str], int]:
    """(first bad seq, hash of the last good entry) -> the seq of a signed repair for it."""
    found: dict[tuple[int, str], int] = {}
    for row in rows:
        if row.get("kind") != "repair":
            continue
        try:
            signed, _ = _open(row)
        except _Bad:
            continue
        content = signed["content"]
        if (
            signed.get("env") == env
            and signed.get("database") == database
            and signed.get("seq") == row["seq"]
            and isinstance(content.get("broken_from"), int)
            and _signed_ok(row, keys) is None
        ):
            found[(content["broken_from"], str(signed.get("prev")))] = row["seq"]
    return found


def witnessed_problem(verdict: Verdict, witnessed: Head, env: str, seen_by: str) -> str | None:
    """Whether a chain still holds a head a successor saw (freshness); why not."""
    when = f" on {witnessed.at[:10]}" if witnessed.at else ""
    by_seq = {e.seq: e for e in verdict.entries}
    head_seq = verdict.head[0] if verdict.head else 0
    if head_seq < witnessed.seq and witnessed.seq not in by_seq:
        return (
            f"{env}'s evidence was rolled back below entry {witnessed.seq}, which {seen_by} "
            f"saw{when}: its chain now ends at entry {head_seq} (restored from a backup, or "
            "its newest entries deleted)"
        )
    entry = by_seq.get(witnessed.seq)
    if entry is not None and entry.hash != witnessed.hash:
        return (
            f"{env}'s evidence diverges at entry {witnessed.seq} from what {seen_by} "
            f"saw{when}: the entry there now is another one"
        )
    return None


def ledger_rows(verdict: Verdict) -> list[dict[str, Any]]:
    """The ledger rows the chain proves, oldest first (with their seq); none of a revision
    that a given-up span names (its evidence lay there: not run)."""
    until: dict[str, int] = {}
    for revision, repair in verdict.doubted:
        until[revision] = max(until.get(revision, 0), repair)
    return [
        {**e.content, "seq": e.seq}
        for e in verdict.entries
        if e.kind == "ledger" and e.seq > until.get(str(e.content.get("revision")), 0)
    ]


def last_end(verdict: Verdict) -> Entry | None:
    """The newest entry that pins the audit chain (a run's end, or a repair)."""
    return next(
        (e for e in reversed(verdict.entries) if e.kind in ("end", "repair", "moved")), None
    )


def last_restart(verdict: Verdict) -> Entry | None:
    """The newest `moved` or `repair` entry: where the signed history (re)starts."""
    return next((e for e in reversed(verdict.entries) if e.kind in ("moved", "repair")), None)


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def witnessed_heads(verdict: Verdict, predecessor: str) -> list[Head]:
    """Every predecessor head this chain's entries say they relied on, newest last."""
    heads = []
    for entry in verdict.entries:
        for seen in entry.content.get("witnessed") or ():
            if isinstance(seen, dict) and seen.get("env") == predecessor:
                try:
                    heads.append(
                        Head(
                            str(seen["env"]),
                            str(seen["database"]),
                            int(seen["seq"]),
                            str(seen["hash"]),
                            seen.get("at"),
                            seen.get("snapshot")
                            if isinstance(seen.get("snapshot"), dict)
                            else None,
                        )
                    )
                except (KeyError, TypeError, ValueError):
                    continue
    return heads


# -- reading on from a witnessed head ----------------------------------------------------------

_RECENT_ENDS = 50  # run ids of the newest end entries a snapshot keeps (audit proof)


def snapshot(verdict: Verdict) -> dict[str, Any]:
    """What a verified chain proves, in the few fields readers use: per revision its newest
    ledger entry (the gate), the newest entry that pins the audit chain, and the newest run
    ends (the audit proof). A successor signs it into its end entry with the head it
    witnessed, so that its next read of this chain starts at that head."""
    proven = {
        str(row.get("revision")): [row.get("checksum"), row.get("direction"), row.get("run_id")]
        for row in ledger_rows(verdict)
        if row.get("direction") != "stamped"
    }
    pin = last_end(verdict)
    ends = [str(e.content.get("run_id")) for e in verdict.entries if e.kind == "end"]
    return {
        "proven": proven,
        "pin": None
        if pin is None
        else {"seq": pin.seq, "kind": pin.kind}
        | {k: v for k, v in pin.content.items() if k != "witnessed"},
        "ended": ends[-_RECENT_ENDS:],
    }


def continue_chain(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[signing.PublicKey],
    *,
    env: str,
    database: str,
    witnessed: Head,
) -> Verdict | None:
    """`rows` (from the witnessed entry on) verified as the continuation of what
    `witnessed.snapshot` says the chain proved up to it: the verdict, with the snapshot's
    facts standing for the entries before; None where it cannot be continued so (the entry
    is not there as witnessed, a repair came since, no snapshot): then read it all."""
    state = witnessed.snapshot
    if not state or not rows or rows[0].get("seq") != witnessed.seq:
        return None
    try:
        digest = hashlib.sha256(_open(rows[0])[1]).hexdigest()
    except _Bad:
        return None
    newer = rows[1:]
    if digest != witnessed.hash or any(r.get("kind") in ("repair", "moved") for r in newer):
        return None
    verdict = verify_chain(
        newer, keys, env=env, database=database, start=(witnessed.seq, witnessed.hash)
    )
    # they stand for the entries up to the witnessed one, whose place and hash they take
    at, digest = witnessed.seq, witnessed.hash
    before = [
        Entry(at, "ledger", {"revision": rev, "checksum": c, "direction": d, "run_id": r}, digest)
        for rev, (c, d, r) in dict(state.get("proven") or {}).items()
    ]
    before += [Entry(at, "end", {"run_id": run}, digest) for run in state.get("ended") or ()]
    pin = state.get("pin")
    if isinstance(pin, dict):
        content = {k: v for k, v in pin.items() if k not in ("seq", "kind")}
        before.append(Entry(at, str(pin["kind"]), content, digest))
    return Verdict(
        [*before, *verdict.entries],
        verdict.broken,
        verdict.head,
        verdict.given_up,
        verdict.doubted,
    )
