"""Fleet benchmark (issue 18): one environment of 500 databases on one server.

- the full upgrade of the N=10 history on every database, sequential vs `--parallel 2`
  (each on databases emptied just before; one of each per round of the whole bench);
- a no-op re-run over the whole fleet at head, and the `status` roll-up of the fleet;
- the floor under both: a bare session per database (connect, `SELECT 1`, close) in as many
  threads as the orchestrator reads with, and the CPU each database costs PostgreSQL and us.

The server's `max_connections` (200) bounds nothing here: a run holds two or three
connections per worker, and the fleet's reads use 8 threads of one connection each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any

from measure import Command, CpuSplit, run_once, timed_with_cpu
from projects import write_keys

from orchestrator.running.predecessor import READERS  # the threads a fleet is read in

DATABASES = int(os.environ.get("BENCH_FLEET_SIZE", "500"))
FULL_MODES = [("sequential", []), ("--parallel 2", ["--parallel", "2"])]
# issue 18's targets, for 500 databases
NOOP_SECONDS, STATUS_SECONDS, PARALLEL_RATIO = 5.0, 3.0, 0.6
# issue 32's: the no-op re-run and `status` at most this times the bare sessions' floor
OVER_BARE_SESSIONS = 1.3
NOOP, STATUS, ONE = (
    "no-op re-run (migrate at head)",
    "status roll-up",
    "no-op migrate of one database (--shard 1/N)",
)
BARE = f"bare sessions: connect, SELECT 1, close ({READERS} threads)"
ALEMBIC_READS = f"Alembic's read: connect, its version table, close ({READERS} threads)"

FLEET_YAML = """\
# the bench's fleet: every name in fleet.txt is one database on the server of FLEET_SERVER_URL
name: fleet
database:
  url_env: FLEET_SERVER_URL
  databases_file: fleet.txt
policy:
  lint: "off"
signing:
  public_key: {pub}
  key_env: BENCH_FLEET_KEY
"""


class FleetBench:
    """Set up once (the databases, the fleet environment); `round()` per repetition of the
    whole bench; `render()` at the end."""

    def __init__(self, cluster: Any, orch_dir: Path, orch: Path, env: dict[str, str], log: Any):
        self.cluster, self.orch_dir, self.orch, self.log = cluster, orch_dir, orch, log
        self.names = [f"fleet_{i:03d}" for i in range(DATABASES)]
        envs_dir = orch_dir / "fleet_environments"
        envs_dir.mkdir(exist_ok=True)
        key = write_keys(orch_dir / "keys", "fleet")
        (envs_dir / "fleet.yaml").write_text(
            FLEET_YAML.format(pub=key.with_suffix(".pub")), encoding="utf-8"
        )
        (envs_dir / "fleet.txt").write_text("\n".join(self.names) + "\n", encoding="utf-8")
        self.environ = {
            **env,
            "ORCHESTRATOR_ENVIRONMENTS_DIR": str(envs_dir),
            "FLEET_SERVER_URL": cluster.url("postgres"),
            "BENCH_FLEET_KEY": str(key),
        }
        self.times: dict[str, list[float]] = {
            **{f"full upgrade, {label}": [] for label, _ in FULL_MODES},
            NOOP: [],
            STATUS: [],
            ONE: [],
            BARE: [],
            ALEMBIC_READS: [],
        }
        self.cpu: dict[str, list[CpuSplit]] = {NOOP: [], STATUS: [], BARE: [], ALEMBIC_READS: []}
        log(f"  fleet: creating {DATABASES} databases (fsync off while creating them)")
        with cluster.setup_mode():
            for name in self.names:
                cluster.recreate(name, checkpoint=False)  # setup_mode ends with one

    def command(self, *args: str) -> Command:
        return Command([self.orch, *args], self.orch_dir, self.environ)

    def _empty_all(self) -> None:  # quicker than dropping and creating 500 databases
        def empty(name: str) -> None:
            with self.cluster.connect(name) as conn:
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(empty, self.names))
        self.cluster.checkpoint()  # the last run's pages on disk, untimed

    def round(self, index: int, reps: int) -> None:
        order = FULL_MODES if index % 2 == 0 else FULL_MODES[::-1]  # who goes first alternates
        for label, flags in order:
            self._empty_all()
            elapsed = run_once(self.command("migrate", "fleet", *flags))
            self.times[f"full upgrade, {label}"].append(elapsed)
            self.log(f"    fleet: full upgrade, {label}: {elapsed:.1f}s")
        runs: dict[str, Callable[[], float]] = {
            NOOP: partial(run_once, self.command("migrate", "fleet")),
            STATUS: partial(run_once, self.command("status", "fleet")),
            ONE: partial(run_once, self.command("migrate", "fleet", "--shard", f"1/{DATABASES}")),
            BARE: self._bare_sessions,
            ALEMBIC_READS: self._alembic_reads,
        }
        for _ in range(reps):
            for label, measure in runs.items():
                elapsed, cpu = timed_with_cpu(measure)
                self.times[label].append(elapsed)
                if cpu is not None and label in self.cpu:
                    self.cpu[label].append(cpu)
        self.log(
            f"    fleet: no-op re-run {median(self.times[NOOP]):.2f}s,"
            f" status {median(self.times[STATUS]):.2f}s, bare sessions"
            f" {median(self.times[BARE]):.2f}s"
        )

    def _bare_sessions(self) -> float:
        """The floor of any tool that reads each database: a session each, nothing read."""

        def touch(name: str) -> None:
            with self.cluster.connect(name) as conn:
                conn.execute("SELECT 1").fetchall()

        start = time.perf_counter()
        with ThreadPoolExecutor(READERS) as pool:
            list(pool.map(touch, self.names))
        return time.perf_counter() - start

    def _alembic_reads(self) -> float:
        """What an Alembic-based look at each database costs: an engine and a session through
        SQLAlchemy (its first-connection queries included) and Alembic's own read of where it
        stands (`alembic current`'s), nothing else."""
        from alembic.runtime.migration import MigrationContext
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        def current(name: str) -> None:
            engine = create_engine(self.cluster.url(name), poolclass=NullPool)
            try:
                with engine.connect() as connection:
                    MigrationContext.configure(connection).get_current_heads()
            finally:
                engine.dispose()

        start = time.perf_counter()
        with ThreadPoolExecutor(READERS) as pool:
            list(pool.map(current, self.names))
        return time.perf_counter() - start

    def _bound(self) -> list[str]:
        """What PostgreSQL's own work per database costs, and the floor that puts under a
        read of the whole fleet on this machine's cores."""
        if not all(self.cpu.values()):
            return []  # not Linux: no /proc/stat

        # per database, in ms: (PostgreSQL's CPU, the reading process's), medians
        per_db = {
            label: (
                median(c.rest for c in splits) / DATABASES * 1000,
                median(c.ours for c in splits) / DATABASES * 1000,
            )
            for label, splits in self.cpu.items()
        }
        cores = os.cpu_count() or 1
        lines = [
            "",
            "CPU per database, measured from the machine's counters during each run (the "
            "command's own start-up included in its share):",
            "",
            "| run | PostgreSQL ms per database | the reading process ms per database |",
            "|---|---:|---:|",
            *(f"| {label} | {pg:.1f} | {ours:.1f} |" for label, (pg, ours) in per_db.items()),
        ]
        server, bare = per_db[STATUS][0], per_db[BARE][0]
        floor = server * DATABASES / 1000 / cores
        lines += [
            "",
            f"What bounds it: PostgreSQL spends {server:.1f} ms of CPU per database in a "
            f"`status` roll-up, {bare:.1f} ms of them to start and end a bare session. On "
            f"{cores} cores that alone takes at least {floor:.1f} s for {DATABASES} "
            "databases, before the orchestrator's own work.",
        ]
        return lines

    def render(self) -> tuple[str, list[str]]:
        t = self.times
        sequential = median(t["full upgrade, sequential"])
        ratio = median(t["full upgrade, --parallel 2"]) / sequential
        targets = {
            NOOP: (f"≤ {NOOP_SECONDS:.0f} s", NOOP_SECONDS),
            STATUS: (f"≤ {STATUS_SECONDS:.0f} s", STATUS_SECONDS),
        }
        lines = [
            f"## Fleet: {DATABASES} databases on one server, the N=10 history",
            "",
            "Full upgrades: one run per mode per round, each on emptied databases; the no-op "
            "re-run, `status fleet` and a one-database no-op several times per round. A no-op "
            f"re-run and `status` read the fleet in {READERS} threads through one engine per "
            "server (one connection per database, its reads in one round trip, the catalog "
            "stamp of the drift check among them), and run a database only where there is "
            f"work. Issue 32's floor: each at most {OVER_BARE_SESSIONS} times the bare "
            "sessions in as many threads.",
            "",
            "| measurement | median s (min-max) | per database ms | target | met |",
            "|---|---:|---:|---|:---:|",
        ]
        summary = []
        for label, times in t.items():
            value = median(times)
            target, met = targets.get(label, ("", None))
            if met is not None:
                met = value <= met
            lines.append(
                f"| {label} | {value:.2f} ({min(times):.2f}-{max(times):.2f}) "
                f"| {value / DATABASES * 1000:.1f} | {target} "
                f"| {'' if met is None else ('yes' if met else '**NO**')} |"
            )
            shown = "" if met is None else ("ok" if met else "NOT MET")
            summary.append(f"fleet {DATABASES}: {label:<44} {value:8.2f} s  {target} {shown}")
        met = ratio <= PARALLEL_RATIO
        lines.append(
            f"| full upgrade: --parallel 2 / sequential | {ratio:.2f} | | ≤ {PARALLEL_RATIO} "
            f"| {'yes' if met else '**NO**'} |"
        )
        summary.append(
            f"fleet {DATABASES}: full upgrade --parallel 2 / sequential {ratio:.2f}  "
            f"≤ {PARALLEL_RATIO} {'ok' if met else 'NOT MET'}"
        )
        floor = median(t[BARE])
        for label in (NOOP, STATUS):
            alembic = median(t[label]) / median(t[ALEMBIC_READS])
            lines.append(f"| {label} / Alembic's read | {alembic:.2f} | | | |")
            summary.append(f"fleet {DATABASES}: {label} / Alembic's read {alembic:.2f}")
            over = median(t[label]) / floor
            met = over <= OVER_BARE_SESSIONS
            lines.append(
                f"| {label} / bare sessions | {over:.2f} | | ≤ {OVER_BARE_SESSIONS} "
                f"| {'yes' if met else '**NO**'} |"
            )
            summary.append(
                f"fleet {DATABASES}: {label} / bare sessions {over:.2f}  "
                f"≤ {OVER_BARE_SESSIONS} {'ok' if met else 'NOT MET'}"
            )
        bound = self._bound()
        if bound:
            summary.append(f"fleet {DATABASES}: {bound[-1]}")
        return "\n".join(lines + bound) + "\n\n", summary


def main() -> int:
    """Standalone: `.venv/bin/python bench/fleet.py` (BENCH_FLEET_SIZE, BENCH_REPS)."""
    import sys

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent)]
    from cluster import DurableCluster
    from common import ORCH, clean_environ
    from projects import make_project

    cluster = DurableCluster()
    cluster.start()
    try:
        cluster.recreate("bare")
        project = make_project(10, cluster.url("bare"))
        env = {**clean_environ(), "ORCHESTRATOR_ACTOR": "bench", "ORCHESTRATOR_LOG_FORMAT": "json"}
        env["ORCHESTRATOR_PROJECT_DIR"] = str(project.orch)
        reps = int(os.environ.get("BENCH_REPS", "3"))
        fleet = FleetBench(cluster, project.orch, ORCH, env, print)
        for index in range(int(os.environ.get("BENCH_ROUNDS", "1"))):
            fleet.round(index, reps)
        section, summary = fleet.render()
    finally:
        cluster.stop()
    print(section)
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
