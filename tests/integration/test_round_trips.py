"""Round trips and connections are part of the contract (SPEC Part 3, "A run costs what
Alembic costs, on a real network"): counted through the latency proxy at RTT 0, bare Alembic
(stock env.py) beside `orchestrator migrate` (signing on, lint off) on the same history, a
table and an index per revision. Counts do not depend on the machine; times are not tested.

The ceilings below are what this release makes, each within the SPEC's budget (bare + N + 20).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from latencyproxy import Counts, LatencyProxy  # noqa: E402
from projects import (  # noqa: E402  # noqa: E402
    ENVS,
    MODELS_PY,
    ORCH_ENV_PY,
    ORCH_INI,
    SIGNING,
    rev_id,
    write_keys,
    write_versions,
)

BIN = Path(sys.executable).parent
N = 10
SPEC_BUDGET = 20  # SPEC Part 3: an upgrade of N revisions, at most bare + N + 20
# what a run adds to bare Alembic's round trips today, whatever the number of revisions: a
# revision costs what it costs Alembic (its ledger row and COMMIT ride with the version row;
# not the first from an empty database: Alembic's INSERT of that row waits for its RETURNING)
FIXED_OVER_BARE = {"empty": 18, "release": 11}
# `transaction: per-run` onto an empty database: beyond bare Alembic, none per revision
PER_RUN_OVER_BARE = 24
NOOP_OVER_CURRENT = 5  # SPEC: a no-op at most `alembic current`'s + 5
# the gate's one read of the predecessor: the SSL question, the startup, SQLAlchemy's
# first-connection query, every read in one batch, closing; where the successor witnessed
# nothing of it yet, the audit rows since its chain's last pin after the batch
PREDECESSOR_ROUND_TRIPS = {"witnessed": 5, "first": 6}


@dataclass
class World:
    proxy: LatencyProxy
    orch: Path
    bare: Path
    env: dict[str, str]
    bare_env: dict[str, str]
    reset: Callable[[str], None]

    def count(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Counts:
        self.proxy.reset()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return self.proxy.counts()

    def alembic(self, *args: str) -> Counts:
        return self.count([str(BIN / "alembic"), *args], self.bare, self.bare_env)

    def orchestrator(self, *args: str) -> Counts:
        return self.count([sys.executable, "-m", "orchestrator", *args], self.orch, self.env)


@pytest.fixture
def world(tmp_path: Path, pg_cluster, pg_url_factory) -> Iterator[World]:  # noqa: ANN001
    urls = {name: pg_url_factory() for name in ("dev", "staging", "prod", "bare")}
    port = urlsplit(urls["dev"]).port
    assert port is not None
    with LatencyProxy(port, 0.0, lifetime=600, record=True) as proxy:
        orch, bare = tmp_path / "orch", tmp_path / "bare"
        (orch / "alembic").mkdir(parents=True)
        (orch / "alembic.ini").write_text(ORCH_INI, encoding="utf-8")
        (orch / "alembic" / "env.py").write_text(ORCH_ENV_PY, encoding="utf-8")
        (orch / "bench_models.py").write_text(MODELS_PY, encoding="utf-8")
        (orch / "environments").mkdir()
        keys = {}
        for name, text in ENVS.items():
            keys[f"BENCH_{name.upper()}_KEY"] = str(write_keys(orch / "keys", name))
            text += SIGNING.format(pub=orch / "keys" / f"{name}.pub", name=name.upper())
            (orch / "environments" / f"{name}.yaml").write_text(text, encoding="utf-8")
        write_versions(orch / "alembic" / "versions", N)
        bare.mkdir()
        subprocess.run(
            [str(BIN / "alembic"), "init", "-t", "generic", "alembic"],
            cwd=bare,
            check=True,
            capture_output=True,
        )
        ini = (bare / "alembic.ini").read_text(encoding="utf-8").splitlines()
        ini = [
            f"sqlalchemy.url = {proxy.url(urls['bare'])}" if x.startswith("sqlalchemy.url") else x
            for x in ini
        ]
        (bare / "alembic.ini").write_text("\n".join(ini) + "\n", encoding="utf-8")
        write_versions(bare / "alembic" / "versions", N)
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ORCHESTRATOR_") and not k.endswith("_DATABASE_URL")
        }
        env = {
            **base,
            "ORCHESTRATOR_PROJECT_DIR": str(orch),
            "ORCHESTRATOR_ACTOR": "tester",
            "ORCHESTRATOR_LOG_FORMAT": "json",
            **{f"{k.upper()}_DATABASE_URL": proxy.url(urls[k]) for k in ("dev", "staging", "prod")},
            **keys,
        }

        def reset(name: str) -> None:
            database = urlsplit(urls[name]).path.lstrip("/")
            pg_cluster.drop_database(database)
            pg_cluster.create_database(database)

        yield World(proxy, orch, bare, env, base, reset)


def test_an_upgrade_onto_an_empty_database_costs_alembics_round_trips_and_a_bounded_rest(
    world: World,
) -> None:
    """Ten revisions onto an empty database, the predecessor read by the gate: our tables
    created, the evidence signed, over at most three connections (the target, the lock, one
    read of the predecessor)."""
    bare = world.alembic("upgrade", "head")
    world.orchestrator("migrate", "dev")
    ours = world.orchestrator("migrate", "staging")
    assert bare.connections == 1
    assert ours.connections <= 3
    assert ours.round_trips <= bare.round_trips + FIXED_OVER_BARE["empty"], (ours, bare)


def test_a_release_onto_a_database_with_our_tables(world: World) -> None:
    """Five revisions onto a database a run already set up."""
    middle = rev_id(5)
    world.alembic("upgrade", middle)
    bare = world.alembic("upgrade", "head")
    world.orchestrator("migrate", "dev")
    world.orchestrator("migrate", "staging", "--to", middle)
    ours = world.orchestrator("migrate", "staging")
    assert ours.connections <= 3
    assert ours.round_trips <= bare.round_trips + FIXED_OVER_BARE["release"], (ours, bare)


def test_a_run_in_one_transaction_pays_no_round_trip_per_revision(world: World) -> None:
    """`transaction: per-run`, one transaction as stock Alembic runs them: its chain entries
    and ledger rows are written together before its COMMIT (a few round trips, not some per
    revision), and the chain they make verifies."""
    staging = world.orch / "environments" / "staging.yaml"
    staging.write_text(staging.read_text(encoding="utf-8") + "transaction: per-run\n")
    bare = world.alembic("upgrade", "head")
    world.orchestrator("migrate", "dev")
    ours = world.orchestrator("migrate", "staging")
    assert ours.connections <= 3
    assert ours.round_trips <= bare.round_trips + PER_RUN_OVER_BARE, (ours, bare)
    assert PER_RUN_OVER_BARE <= N + SPEC_BUDGET
    world.orchestrator("audit", "verify", "--env", "staging")  # exit 0: intact
    world.orchestrator("migrate", "prod")  # the gate believes what staging signed


def test_a_no_op_costs_at_most_alembic_current_and_five(world: World) -> None:
    world.alembic("upgrade", "head")
    current = world.alembic("current")
    world.orchestrator("migrate", "dev")
    ours = world.orchestrator("migrate", "dev")
    assert ours.connections == current.connections == 1
    assert ours.round_trips <= current.round_trips + NOOP_OVER_CURRENT


def test_status_opens_one_connection_per_database(world: World) -> None:
    world.orchestrator("migrate", "dev")
    world.orchestrator("migrate", "staging")
    assert world.orchestrator("status").connections == 3  # dev, staging, prod


def test_a_run_over_one_connection_commits_each_revision_with_its_ledger_row(
    world: World,
) -> None:
    """Per revision a run sends what Alembic sends and no round trip more: the version row's
    UPDATE, its ledger row (and chain entry), the COMMIT and the next revision's BEGIN go in
    one round trip."""
    world.orchestrator("migrate", "dev")
    world.reset("staging")
    ten = world.orchestrator("migrate", "staging")
    world.reset("staging")
    world.orchestrator("migrate", "staging", "--to", rev_id(5))
    world.reset("staging")
    five = world.orchestrator("migrate", "staging", "--to", rev_id(5))
    # Alembic sends 3 per revision here (CREATE TABLE, CREATE INDEX, the version row)
    assert ten.round_trips - five.round_trips == 5 * 3
    world.orchestrator("audit", "verify", "--env", "staging")  # exit 0: the chain holds
    world.orchestrator("migrate", "staging")
    world.orchestrator("migrate", "prod")  # the gate believes what staging signed


# On the connection the revisions run on, beyond their 3 round trips each (Alembic's: the
# last, the version row, carries the ledger row and the COMMIT): what bare Alembic pays too
# (the TLS question, the startup, the BEGIN with the session's settings, Alembic's look at
# its version, the goodbye: 5; not its look for its table, answered from the tables listed
# under the lock) and ours (8): the run's start on record, everything it reads under the
# lock in one round trip, gate.passed, the schema it left in one round trip and its record,
# run.succeeded, and its end: one transaction of two round trips (lock.released, the end
# entry and the checkpoint; on this pooled connection, the lock's being closed by then).
TARGET_BEYOND_REVISIONS = 5 + 8


def test_the_connection_the_revisions_run_on_costs_alembics_and_eight_more(
    world: World,
) -> None:
    """A release of five revisions onto a database a run already set up: the target
    connection's round trips, counted one by one."""
    world.orchestrator("migrate", "dev")
    world.orchestrator("migrate", "staging", "--to", rev_id(5))
    world.orchestrator("migrate", "staging")
    target = [
        c for c in world.proxy.transcript() if any("CREATE TABLE t_" in m for rt in c for m in rt)
    ]
    assert len(target) == 1, [len(c) for c in world.proxy.transcript()]
    assert len(target[0]) - 5 * 3 == TARGET_BEYOND_REVISIONS, "\n".join(
        " | ".join(rt)[:160] for rt in target[0]
    )


def test_the_ceilings_are_within_the_spec_budget() -> None:
    assert max(FIXED_OVER_BARE.values()) <= SPEC_BUDGET


def _predecessor_read(world: World, *args: str) -> Counts:
    """`orchestrator ARGS` with dev (the predecessor) behind a proxy of its own: its counts."""
    with LatencyProxy(world.proxy.upstream[1], 0.0, lifetime=600) as dev:
        env = {**world.env, "DEV_DATABASE_URL": dev.url(world.env["DEV_DATABASE_URL"])}
        world.count([sys.executable, "-m", "orchestrator", *args], world.orch, env)
        return dev.counts()


def test_a_release_reads_its_predecessor_in_one_round_trip(world: World) -> None:
    """The gate, the freshness check, the audit proof, the env.py note and the schema check
    after the run read dev once: one connection, every read in one round trip."""
    world.orchestrator("migrate", "dev")
    world.orchestrator("migrate", "staging", "--to", rev_id(5))
    dev = _predecessor_read(world, "migrate", "staging")
    assert dev.connections == 1
    assert dev.round_trips == PREDECESSOR_ROUND_TRIPS["witnessed"], dev


def test_a_first_run_reads_its_predecessor_in_two_round_trips(world: World) -> None:
    """Nothing of dev witnessed yet: its whole chain in the batch, and the audit rows since
    the chain's last pin (known once the chain is read) after it."""
    world.orchestrator("migrate", "dev")
    dev = _predecessor_read(world, "migrate", "staging")
    assert dev.connections == 1
    assert dev.round_trips == PREDECESSOR_ROUND_TRIPS["first"], dev


def test_a_predecessor_table_not_as_made_is_read_step_by_step(world: World) -> None:
    """dev's recorded schemas without the column the batch orders by: the batch cannot be
    read, the gate reads dev step by step as it would without it, and the run goes on."""
    from sqlalchemy import create_engine, text

    world.orchestrator("migrate", "dev")
    world.orchestrator("migrate", "staging", "--to", rev_id(5))
    engine = create_engine(world.env["DEV_DATABASE_URL"])
    try:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE orchestrator_schema RENAME COLUMN id TO row_id"))
    finally:
        engine.dispose()
    dev = _predecessor_read(world, "migrate", "staging")
    assert dev.connections == 1
    assert dev.round_trips > PREDECESSOR_ROUND_TRIPS["witnessed"], dev


# a read-only look at a database: the SSL question, the startup, one batch, closing
LOOK_ROUND_TRIPS = 4


def test_status_reads_each_database_in_one_round_trip(world: World) -> None:
    """Its state, open runs, recorded schema and stamp, evidence and last runs' ends: what a
    database's row shows is read in one batch; the engine's first connection also asks
    SQLAlchemy's first-connection question, once per server."""
    for env in ("dev", "staging", "prod"):
        world.orchestrator("migrate", env)
    counts = world.orchestrator("status")
    looks = sorted(len(said) for said in world.proxy.transcript())
    assert counts.connections == 3
    assert looks == [LOOK_ROUND_TRIPS, LOOK_ROUND_TRIPS, LOOK_ROUND_TRIPS + 1], looks


def test_a_fleet_at_head_is_told_apart_in_one_round_trip_per_database(
    world: World,
    pg_cluster,  # noqa: ANN001
) -> None:
    """A no-op re-run over a fleet reads each database once, in one batch (what its run would
    read under the lock), and starts no run where there is nothing to do."""
    names = [f"rt_fleet_{i}_{os.getpid()}" for i in range(3)]
    for name in names:
        pg_cluster.create_database(name)
    server = urlsplit(world.env["DEV_DATABASE_URL"])._replace(path="/postgres").geturl()
    envs = world.orch / "environments"
    (envs / "fleet.yaml").write_text(
        "name: fleet\ndatabase:\n  url_env: FLEET_SERVER_URL\n  databases_file: fleet.txt\n"
        'policy:\n  lint: "off"\n',
        encoding="utf-8",
    )
    (envs / "fleet.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    world.env["FLEET_SERVER_URL"] = server
    world.orchestrator("migrate", "fleet")
    counts = world.orchestrator("migrate", "fleet")
    looks = sorted(len(said) for said in world.proxy.transcript())
    assert counts.connections == 3
    assert looks == [LOOK_ROUND_TRIPS, LOOK_ROUND_TRIPS, LOOK_ROUND_TRIPS + 1], looks
