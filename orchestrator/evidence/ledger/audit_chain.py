"""The audit chain: append-only rows, each chained to the previous one by a sha256; the
rows' hashing, decoding and verification, and reading them all."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from orchestrator.db.database import has_table
from orchestrator.evidence.ledger.tables import AUDIT_TABLE, GENESIS, audit


def canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


# the scanner `json.loads` ends in (set by JSONDecoder.__init__; typeshed does not declare it)
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode_payload(payload: Any) -> dict[str, Any] | None:
    """Pure: the event an audit row's payload records, or None when it is not a JSON object
    (a row written by hand need not be). On the compact JSON the trail writes, the decoder's
    scanner alone: twice as fast as `json.loads`, whose whitespace checks cost as much as
    the parsing. Anything it does not consume whole goes through `json.loads`."""
    if not isinstance(payload, str):
        return None
    try:
        value, end = _scan_json(payload, 0)
    except (StopIteration, ValueError, RecursionError):
        end = -1
    if end != len(payload):  # whitespace around it, extra data, or no JSON at all
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def record_of(row: Mapping[Any, Any]) -> dict[str, Any]:
    """An audit row's event: its payload, completed by the row's columns where it lacks
    them (all there is when the payload is not a JSON object), so that every reader finds
    the indexed fields the row has, as text."""
    record = decode_payload(row["payload"]) or {}
    for column in _INDEXED:
        value = record.get(column)
        if value is not None and not isinstance(value, str):  # by hand: the column is text
            record[column] = row.get(column)
        elif value is None and row.get(column) is not None:
            record[column] = row[column]
    return record


def chain_hash(prev_hash: str, row_id: int, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}|{row_id}|{payload}".encode()).hexdigest()


def chain_rows(
    records: Sequence[Mapping[str, Any]], last_id: int, last_hash: str
) -> list[dict[str, Any]]:
    """Pure: the audit rows for `records`, chained after the row (`last_id`, `last_hash`)."""
    rows = []
    row_id, prev_hash = last_id, last_hash
    for record in records:
        row_id += 1
        payload = canonical(record)
        digest = chain_hash(prev_hash, row_id, payload)
        rows.append(
            {
                "id": row_id,
                "timestamp": record["timestamp"],
                "event": record["event"],
                "run_id": record["run_id"],
                "env": record["env"],
                "actor": record["actor"],
                "revision": record.get("revision"),
                "outcome": record.get("outcome"),
                "payload": payload,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    return rows


@dataclass(frozen=True)
class BrokenRow:
    id: int | None
    timestamp: str | None
    problem: str
    kind: str = "row"  # row (of the audit table) | checkpoint | ledger row | database


def verify_chain(rows: Sequence[Mapping[str, Any]]) -> BrokenRow | None:
    """Recompute the chain over rows ordered by id; the first row that does not fit."""
    return check_chain(rows, decode_all=False)[0]


_INDEXED = ("timestamp", "event", "run_id", "env", "actor", "revision", "outcome")


def check_chain(
    rows: Sequence[Mapping[str, Any]], decode_all: bool = True
) -> tuple[BrokenRow | None, list[dict[str, Any]]]:
    """`verify_chain`, and each row's event as recorded (its payload), in order: every row's
    with `decode_all` (those after a broken row too), else those checked before a break."""
    expected_prev, expected_id = GENESIS, 1
    broken: BrokenRow | None = None
    records: list[dict[str, Any]] = []
    for row in rows:
        if broken is not None:
            if not decode_all:
                break
            records.append(record_of(row))
            continue
        problem = None
        record = None
        if row["id"] != expected_id:
            problem = f"expected row {expected_id} here (rows missing or inserted)"
        elif row["prev_hash"] != expected_prev:
            problem = "its link to the previous row does not match"
        elif chain_hash(row["prev_hash"], row["id"], row["payload"]) != row["hash"]:
            problem = "its content does not match its hash"
        elif (record := decode_payload(row["payload"])) is None:
            problem = "its payload is not a JSON object"
        else:
            get = record.get
            if (
                get("timestamp") != row["timestamp"]
                or get("event") != row["event"]
                or get("run_id") != row["run_id"]
                or get("env") != row["env"]
                or get("actor") != row["actor"]
                or get("revision") != row["revision"]
                or get("outcome") != row["outcome"]
            ):
                column = next(c for c in _INDEXED if get(c) != row[c])
                problem = f"column {column} differs from the hashed record"
        if problem:
            broken = BrokenRow(row["id"], row["timestamp"], problem)
            if decode_all:
                records.append(record if record is not None else record_of(row))
            continue
        records.append(record)  # type: ignore[arg-type]
        expected_prev, expected_id = row["hash"], row["id"] + 1
    return broken, records


_CHAIN_COLUMNS = tuple(column.name for column in audit.columns)


def read_chain(connection: Connection) -> list[dict[str, Any]]:
    """Every audit row, oldest first, as plain dicts: the columns the chain hashes, whatever
    else the table may have gained."""
    if not has_table(connection, AUDIT_TABLE):
        return []
    sql = str(select(audit).order_by(audit.c.id).compile(dialect=connection.dialect))
    # The driver's own cursor, one fetch: these columns need no conversion, and 100,000
    # rows through SQLAlchemy's result objects took a second more than through the driver.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    # the select names every column, in this order; `strict` would cost a tenth of the time
    return [dict(zip(_CHAIN_COLUMNS, row, strict=False)) for row in rows]
