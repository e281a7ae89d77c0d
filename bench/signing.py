"""Signing on vs off (issue 11): the same full upgrade with and without `signing:`.

Two pairs, each on fresh databases, contenders alternating:
- the first environment's full upgrade, signing every ledger row and a checkpoint (on) or
  not (off);
- its successor's full upgrade, whose gate verifies every signature of the predecessor's
  ledger (signed predecessor) or reads an unsigned one.

    .venv/bin/python bench/signing.py       # standalone: N from BENCH_N (default 1000)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from measure import Command, Contender, Sample, alternate, run_once  # noqa: E402

RATIOS = [
    (
        "full upgrade: signing on / off",
        "migrate dev (full), signing on",
        "migrate dev (full), signing off",
        1.05,
    ),
    (
        "successor's full upgrade: signed / unsigned predecessor",
        "migrate staging (full), signed dev",
        "migrate staging (full), unsigned dev",
        1.05,
    ),
]


def signing_bench(
    cluster: Any, n: int, orch_dir: Path, orch: Path, env: dict[str, str], reps: int, log: Any
) -> dict[str, Sample]:
    from projects import ENVS, SIGNING, write_keys

    keys = orch_dir / "signing_keys"
    keys.mkdir(exist_ok=True)
    environ = dict(env)
    dirs = {"off": orch_dir / "envs_unsigned", "on": orch_dir / "envs_signed"}
    for mode, directory in dirs.items():
        directory.mkdir(exist_ok=True)
        for name in ("dev", "staging"):
            text = ENVS[name]
            if mode == "on":
                environ[f"BENCH_{name.upper()}_KEY"] = str(write_keys(keys, name))
                text += SIGNING.format(pub=keys / f"{name}.pub", name=name.upper())
            (directory / f"{name}.yaml").write_text(text, encoding="utf-8")
    db = {(mode, e): f"sig_{mode}_{e}_n{n}" for mode in dirs for e in ("dev", "staging")}

    def command(mode: str, env_name: str) -> Command:
        return Command(
            [orch, "migrate", env_name],
            orch_dir,
            {
                **environ,
                "ORCHESTRATOR_ENVIRONMENTS_DIR": str(dirs[mode]),
                "DEV_DATABASE_URL": cluster.url(db[(mode, "dev")]),
                "STAGING_DATABASE_URL": cluster.url(db[(mode, "staging")]),
            },
        )

    def fresh(mode: str, env_name: str) -> float:
        cluster.recreate(db[(mode, env_name)])
        return run_once(command(mode, env_name))

    log(f"  signing on/off ({reps} repetitions)")
    for mode in dirs:  # the predecessors at head, for the successor's gate
        fresh(mode, "dev")
    return alternate(
        [
            Contender("migrate dev (full), signing off", lambda: fresh("off", "dev")),
            Contender("migrate dev (full), signing on", lambda: fresh("on", "dev")),
            Contender("migrate staging (full), unsigned dev", lambda: fresh("off", "staging")),
            Contender("migrate staging (full), signed dev", lambda: fresh("on", "staging")),
        ],
        reps,
        log,
    )


def main() -> int:
    from cluster import DurableCluster
    from common import ORCH, clean_environ
    from projects import make_project

    n = int(os.environ.get("BENCH_N", "1000").split(",")[-1])
    reps = int(os.environ.get("BENCH_REPS", "3"))
    cluster = DurableCluster()
    cluster.start()
    started = time.perf_counter()
    try:
        cluster.recreate("bare")
        project = make_project(n, cluster.url("bare"))
        env = {**clean_environ(), "ORCHESTRATOR_ACTOR": "bench", "ORCHESTRATOR_LOG_FORMAT": "json"}
        env["ORCHESTRATOR_PROJECT_DIR"] = str(project.orch)
        run_once(Command([ORCH, "--help"], project.orch, env))
        samples = signing_bench(cluster, n, project.orch, ORCH, env, reps, print)
    finally:
        cluster.stop()
    print(f"\nN = {n}, {reps} repetitions, {time.perf_counter() - started:.0f}s, medians:")
    for label, a, b, _ in RATIOS:
        sa, sb = samples[a].median, samples[b].median
        print(f"  {label}: {sa:.3f}s / {sb:.3f}s = {sa / sb:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
