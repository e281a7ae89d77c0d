"""The network section of `make bench` (SPEC Part 3, "A run costs what Alembic costs, on a
real network"): bare Alembic (stock env.py) beside `orchestrator migrate` (signing on, lint
off) on the same history, through a loopback proxy that adds a fixed round-trip time (0, 10
and 50 ms) and counts each command's connections and round trips (tests/latencyproxy.py).

    .venv/bin/python bench/network.py  # standalone: BENCH_NET_RTTS, _FLEET, _REPS

Work: 10 revisions onto an empty database; a release of 10 onto a database that has our
tables and 10 before them; 100 revisions onto an empty database (one transaction per revision, and
`transaction: per-run`); a no-op (`alembic current` / `migrate` at
head); `status` of dev, staging and prod; a fleet's full upgrade of the 10 revisions
(bare: `alembic upgrade head` once per database). Counts do not depend on the machine;
tests/integration/test_round_trips.py pins them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from common import ALEMBIC, ORCH, clean_environ, standalone  # noqa: E402
from latencyproxy import Counts, LatencyProxy  # noqa: E402
from projects import make_project, rev_id  # noqa: E402

RTTS = [float(x) for x in os.environ.get("BENCH_NET_RTTS", "0,10,50").split(",")]
FLEET = int(os.environ.get("BENCH_NET_FLEET", "50"))
REPS = int(os.environ.get("BENCH_NET_REPS", "3"))  # each row's times: the median of these


@dataclass
class Measured:
    counts: Counts
    seconds: float


def measure(proxy: LatencyProxy, argv: list[Any], cwd: Path, env: dict[str, str]) -> Measured:
    """One command through `proxy`: its connections, round trips and wall time."""
    proxy.reset()
    start = time.perf_counter()
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr[-2000:]}")
    time.sleep(0.05)  # the proxy sees the last close
    return Measured(proxy.counts(), elapsed)


class Worlds:
    """The projects and databases of each piece of work, reset before each measurement."""

    def __init__(self, cluster: Any, proxy: LatencyProxy) -> None:
        self.cluster, self.proxy = cluster, proxy
        self.base = clean_environ()
        self.projects = {
            n: make_project(n, proxy.url(cluster.url(f"net_bare_{n}")), f"net_n{n}")
            for n in (10, 100)
        }
        self.fleet = [f"net_fleet_{i:03d}" for i in range(FLEET)]

    def url(self, name: str) -> str:
        return self.proxy.url(self.cluster.url(name))

    def orch_env(self, n: int, **more: str) -> dict[str, str]:
        project = self.projects[n]
        return {
            **self.base,
            "ORCHESTRATOR_PROJECT_DIR": str(project.orch),
            "ORCHESTRATOR_ACTOR": "bench",
            "ORCHESTRATOR_LOG_FORMAT": "json",
            "DEV_DATABASE_URL": self.url(f"net_dev_{n}"),
            "STAGING_DATABASE_URL": self.url(f"net_staging_{n}"),
            "PROD_DATABASE_URL": self.url(f"net_prod_{n}"),
            **project.key_env,
            **more,
        }

    def recreate(self, *names: str) -> None:
        for name in names:
            self.cluster.drop_database(name)
            self.cluster.create_database(name)

    def quiet(self, argv: list[Any], cwd: Path, env: dict[str, str]) -> None:
        subprocess.run([str(a) for a in argv], cwd=cwd, env=env, check=True, capture_output=True)

    # -- each piece of work: (bare, ours), each a callable that sets up and measures ----------

    def upgrade(self, n: int) -> tuple[Callable[[], Measured], Callable[[], Measured]]:
        project = self.projects[n]

        def bare() -> Measured:
            self.recreate(f"net_bare_{n}")
            return measure(self.proxy, [ALEMBIC, "upgrade", "head"], project.bare, self.base)

        def ours() -> Measured:
            self.recreate(f"net_staging_{n}")
            return measure(self.proxy, [ORCH, "migrate", "staging"], project.orch, self.orch_env(n))

        return bare, ours

    def upgrade_per_run(self, n: int) -> tuple[Callable[[], Measured], Callable[[], Measured]]:
        """`n` revisions onto an empty database, staging set to `transaction: per-run` (one
        transaction around the run, as bare Alembic's stock env.py runs them)."""
        project = self.projects[n]
        envs = project.orch / "net_per_run_environments"
        envs.mkdir(exist_ok=True)
        for source in (project.orch / "environments").glob("*.yaml"):
            text = source.read_text(encoding="utf-8")
            if source.stem == "staging":
                text += "transaction: per-run\n"
            (envs / source.name).write_text(text, encoding="utf-8")
        bare, _ = self.upgrade(n)

        def ours() -> Measured:
            self.recreate(f"net_staging_{n}")
            env = self.orch_env(n, ORCHESTRATOR_ENVIRONMENTS_DIR=str(envs))
            return measure(self.proxy, [ORCH, "migrate", "staging"], project.orch, env)

        return bare, ours

    def release(self) -> tuple[Callable[[], Measured], Callable[[], Measured]]:
        """The SPEC's release: 10 revisions (the 11th to the 20th of the long history) onto
        a database that has our tables and the 10 before."""
        project, before, after = self.projects[100], rev_id(10), rev_id(20)

        def bare() -> Measured:
            self.recreate("net_bare_100")
            self.quiet([ALEMBIC, "upgrade", before], project.bare, self.base)
            return measure(self.proxy, [ALEMBIC, "upgrade", after], project.bare, self.base)

        def ours() -> Measured:
            self.recreate("net_staging_100")
            env = self.orch_env(100)
            self.quiet([ORCH, "migrate", "staging", "--to", before], project.orch, env)
            argv = [ORCH, "migrate", "staging", "--to", after]
            return measure(self.proxy, argv, project.orch, env)

        return bare, ours

    def noop(self) -> tuple[Callable[[], Measured], Callable[[], Measured]]:
        project = self.projects[10]
        return (
            lambda: measure(self.proxy, [ALEMBIC, "current"], project.bare, self.base),
            lambda: measure(self.proxy, [ORCH, "migrate", "dev"], project.orch, self.orch_env(10)),
        )

    def status(self) -> Callable[[], Measured]:
        return lambda: measure(
            self.proxy, [ORCH, "status"], self.projects[10].orch, self.orch_env(10)
        )

    def fleet_upgrade(self) -> tuple[Callable[[], Measured], Callable[[], Measured]]:
        project = self.projects[10]
        envs = project.orch / "net_fleet_environments"
        envs.mkdir(exist_ok=True)
        (envs / "fleet.yaml").write_text(
            "name: fleet\ndatabase:\n  url_env: FLEET_SERVER_URL\n  databases_file: fleet.txt\n"
            'policy:\n  lint: "off"\n'
            f"signing:\n  public_key: {project.orch / 'keys' / 'dev.pub'}\n"
            "  key_env: BENCH_DEV_KEY\n",
            encoding="utf-8",
        )
        (envs / "fleet.txt").write_text("\n".join(self.fleet) + "\n", encoding="utf-8")
        inis = []
        bare_ini = (project.bare / "alembic.ini").read_text(encoding="utf-8")
        for name in self.fleet:
            ini = project.bare / f"{name}.ini"
            ini.write_text(
                bare_ini.replace(self.url("net_bare_10"), self.url(name)), encoding="utf-8"
            )
            inis.append(ini)

        def bare() -> Measured:
            self.recreate(*self.fleet)
            self.proxy.reset()
            total, counts = 0.0, Counts(0, 0)
            for ini in inis:
                one = measure(
                    self.proxy, [ALEMBIC, "-c", ini, "upgrade", "head"], project.bare, self.base
                )
                total, counts = (
                    total + one.seconds,
                    Counts(
                        counts.connections + one.counts.connections,
                        counts.round_trips + one.counts.round_trips,
                    ),
                )
            return Measured(counts, total)

        def ours() -> Measured:
            self.recreate(*self.fleet)
            env = self.orch_env(
                10,
                ORCHESTRATOR_ENVIRONMENTS_DIR=str(envs),
                FLEET_SERVER_URL=self.url("postgres"),
            )
            return measure(self.proxy, [ORCH, "migrate", "fleet"], project.orch, env)

        return bare, ours


def network_bench(cluster: Any, log: Callable[[str], None]) -> tuple[str, list[str]]:
    port = urlsplit(cluster.url("postgres")).port
    assert port is not None
    with LatencyProxy(port, 0.0, lifetime=6 * 3600) as proxy:
        worlds = Worlds(cluster, proxy)
        for n in (10, 100):
            for env in ("dev", "staging", "prod", "bare"):
                worlds.recreate(f"net_{env}_{n}")
        for n in (10, 100):  # the predecessors at head (dev), prod behind: status has work
            worlds.quiet([ORCH, "migrate", "dev"], worlds.projects[n].orch, worlds.orch_env(n))
        worlds.quiet([ALEMBIC, "upgrade", "head"], worlds.projects[10].bare, worlds.base)
        work: list[tuple[str, Any, Any]] = [
            ("10 revisions onto an empty database", *worlds.upgrade(10)),
            ("a release: 10 revisions onto a database with our tables", *worlds.release()),
            ("100 revisions onto an empty database", *worlds.upgrade(100)),
            ("100 revisions, `transaction: per-run`", *worlds.upgrade_per_run(100)),
            ("no-op (`alembic current` / `migrate dev` at head)", *worlds.noop()),
            ("`status` of dev, staging, prod", None, worlds.status()),
            (f"a fleet of {FLEET}: the 10 revisions on each", *worlds.fleet_upgrade()),
        ]
        results: dict[tuple[str, float], tuple[Measured | None, Measured]] = {}
        for rtt in RTTS:
            proxy.set_rtt(rtt)
            log(f"  network: RTT {rtt:g} ms")
            for label, bare, ours in work:
                # alternating, each time: the median of REPS (the fleet's row once: minutes)
                reps = 1 if label.startswith("a fleet") else REPS
                pairs = [(bare() if bare is not None else None, ours()) for _ in range(reps)]
                b = _median([p[0] for p in pairs]) if bare is not None else None
                o = _median([p[1] for p in pairs])
                results[(label, rtt)] = (b, o)
                shown = f"bare {b.counts.round_trips} rt/{b.seconds:.2f}s, " if b else ""
                log(f"    {label}: {shown}ours {o.counts.round_trips} rt/{o.seconds:.2f}s")
    return render(work, results)


def _median(measured: list[Any]) -> Measured:
    """The run of median wall time (counts are the same every time)."""
    return sorted(measured, key=lambda m: m.seconds)[len(measured) // 2]


def render(
    work: list[tuple[str, Any, Any]],
    results: dict[tuple[str, float], tuple[Measured | None, Measured]],
) -> tuple[str, list[str]]:
    lines = [
        "## On a network: round trips, connections, wall time",
        "",
        "Through a loopback proxy adding a fixed round-trip time (tests/latencyproxy.py). A "
        "round trip is the client speaking after the server last spoke; connecting, "
        "authentication and closing count for both tools. Bare Alembic: the stock env.py; ours: "
        "`orchestrator migrate` with signing on and lint off. Goal (SPEC): at most bare + N + 20 "
        "round trips over at most 3 connections for N revisions; a no-op at most "
        "`alembic current` + 5; `status` one connection per database. Each row's time is the "
        f"median of {REPS} runs per RTT (the fleet's: one), the two tools alternating.",
        "",
        "| work | RTT ms | bare: connections / round trips / s | ours: connections / round "
        "trips / s | ours - bare round trips | ours / bare time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary = []
    for label, _b, _o in work:
        for rtt in RTTS:
            b, o = results[(label, rtt)]
            bare_text = (
                f"{b.counts.connections} / {b.counts.round_trips} / {b.seconds:.2f}" if b else ""
            )
            extra = f"{o.counts.round_trips - b.counts.round_trips:+d}" if b else ""
            ratio = f"{o.seconds / b.seconds:.2f}" if b else ""
            lines.append(
                f"| {label} | {rtt:g} | {bare_text} | {o.counts.connections} / "
                f"{o.counts.round_trips} / {o.seconds:.2f} | {extra} | {ratio} |"
            )
            summary.append(
                f"network RTT {rtt:>4g} ms  {label:<56} "
                + (f"bare {b.counts.round_trips:>5} rt {b.seconds:7.2f}s  " if b else " " * 27)
                + f"ours {o.counts.round_trips:>5} rt ({o.counts.connections} conn) "
                f"{o.seconds:7.2f}s" + (f"  x{o.seconds / b.seconds:.2f}" if b else "")
            )
    return "\n".join(lines) + "\n\n", summary


if __name__ == "__main__":
    raise SystemExit(standalone(network_bench))
