"""Our tables in each target database: their names, locks and definitions."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text

LEDGER_TABLE = "orchestrator_ledger"
AUDIT_TABLE = "orchestrator_audit"
SCHEMA_TABLE = "orchestrator_schema"
CHECKPOINT_TABLE = "orchestrator_checkpoint"
CHAIN_TABLE = "orchestrator_chain"  # the signed evidence chain (SPEC Part 3, evidence/chain.py)
OWN_TABLES = frozenset({LEDGER_TABLE, AUDIT_TABLE, SCHEMA_TABLE, CHECKPOINT_TABLE, CHAIN_TABLE})
GENESIS = "0" * 64
# Serialises appends to the audit chain (PostgreSQL); SQLite writers are serialised anyway.
CHAIN_LOCK_KEY = 0x6F72636861696E  # "orchain"
SETUP_LOCK_KEY = 0x6F72736574757000

ACTOR_WIDTH = 4096  # was 256: `widen_actor` brings older tables up to this
metadata = MetaData()

ledger = Table(
    LEDGER_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("revision", String(64), nullable=False, index=True),
    Column("checksum", String(64), nullable=False),
    Column("direction", String(8), nullable=False),  # up | down | baseline
    Column("run_id", String(32), nullable=False),
    Column("env", String(128), nullable=False),
    Column("actor", String(ACTOR_WIDTH), nullable=False),
    Column("at", String(32), nullable=False),
    # DSSE envelope (JSON) over trust.ledger_payload, where the environment signs
    Column("envelope", Text),
    # the project files the revision's code opened while it ran: canonical JSON of
    # {path: sha256}; NULL for rows written before reads were observed (signed with the row)
    Column("reads", Text),
)

# Signed audit checkpoints: the chain's head at the end of each run of a signing environment.
checkpoint = Table(
    CHECKPOINT_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("audit_id", Integer, nullable=False),
    Column("audit_hash", String(64), nullable=False),
    Column("at", String(32), nullable=False),
    Column("envelope", Text, nullable=False),
)

# One entry per ledger row and run end of a signing environment: core/chain.py says what
# an entry is; `seq` is the primary key, so two writers can never both take the same place.
chain_entries = Table(
    CHAIN_TABLE,
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("envelope", Text, nullable=False),
)

audit = Table(
    AUDIT_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("timestamp", String(32), nullable=False),
    Column("event", String(64), nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("env", String(128), nullable=False),
    Column("actor", String(ACTOR_WIDTH), nullable=False),
    Column("revision", String(64)),
    Column("outcome", String(16)),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_orchestrator_audit_timestamp", "timestamp"),
    Index("ix_orchestrator_audit_run_id", "run_id"),
    Index("ix_orchestrator_audit_env_timestamp", "env", "timestamp"),
    Index("ix_orchestrator_audit_event", "event"),
    Index("ix_orchestrator_audit_actor", "actor"),
    Index("ix_orchestrator_audit_outcome", "outcome"),
)

# The schema each successful run left behind, at the revision(s) it left: the fingerprint, and
# the description it was computed from, so that `drift` can say what changed since.
schema = Table(
    SCHEMA_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("heads", String(512), nullable=False),  # sorted, comma-separated; "" for base
    Column("fingerprint", String(64), nullable=False),
    Column("description", Text, nullable=False),  # canonical JSON
    # schema_reader.catalog_stamp at the same moment: unchanged stamp, unchanged schema
    Column("stamp", String(64)),
    Column("run_id", String(32), nullable=False),
    Column("env", String(128), nullable=False),
    Column("actor", String(ACTOR_WIDTH), nullable=False),
    Column("at", String(32), nullable=False),
    Column("envelope", Text),  # DSSE envelope over trust.schema_payload, where the env signs
    Index("ix_orchestrator_schema_heads", "heads", "id"),
)
