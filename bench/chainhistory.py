"""A predecessor with a long signed history (SPEC Part 3, "Evidence is a history"): what
`migrate prod` pays to read and verify staging's chain when it holds 10 entries and when it
holds 10,000, on the first run after the history grew (everything new is read) and on the
next one (read from the head prod's own end entry witnessed).

    .venv/bin/python bench/chainhistory.py      # standalone (BENCH_CHAIN_ENTRIES)

The long history is made of copies of staging's own last end entry (signed with its key,
linked), as 10,000 runs that ended without changing anything would leave it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from common import ORCH, clean_environ, standalone  # noqa: E402
from projects import make_project, rev_id  # noqa: E402

ENTRIES = int(os.environ.get("BENCH_CHAIN_ENTRIES", "10000"))


def grow(url: str, key_file: str, count: int) -> None:
    """Append `count` signed copies of the chain's last end entry (other run ids)."""
    import base64
    import hashlib

    import sqlalchemy as sa

    from orchestrator.core import chain, signing

    key = signing.load_private_key(Path(key_file).read_bytes())
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            rows = connection.execute(
                sa.text("SELECT seq, envelope FROM orchestrator_chain ORDER BY seq")
            ).all()
            seq, envelope = rows[-1]
            payload = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
            ends = [
                json.loads(base64.b64decode(json.loads(e)["payload"]))
                for _, e in rows
                if json.loads(base64.b64decode(json.loads(e)["payload"]))["kind"] == "end"
            ]
            content = ends[-1]["content"]
            prev_hash = hashlib.sha256(
                base64.b64decode(json.loads(envelope)["payload"])
            ).hexdigest()
            made = []
            for i in range(count):
                seq += 1
                row = chain.build_entry(
                    key,
                    env=payload["env"],
                    database=payload["database"],
                    seq=seq,
                    prev=prev_hash,
                    kind="end",
                    content={**content, "run_id": f"bench{i:08d}", "witnessed": []},
                )
                prev_hash = row["hash"]
                made.append({k: row[k] for k in ("seq", "kind", "run_id", "envelope")})
            connection.execute(
                sa.text(
                    "INSERT INTO orchestrator_chain (seq, kind, run_id, envelope)"
                    " VALUES (:seq, :kind, :run_id, :envelope)"
                ),
                made,
            )
    finally:
        engine.dispose()


def chain_bench(cluster: Any, log: Callable[[str], None]) -> tuple[str, list[str]]:
    results: dict[int, tuple[float, float]] = {}
    for size in (10, ENTRIES):
        names = {e: f"chainhist_{e}_{size}" for e in ("dev", "staging", "prod", "bare")}
        for name in names.values():
            cluster.drop_database(name)
            cluster.create_database(name)
        project = make_project(10, cluster.url(names["bare"]), f"chainhist{size}")
        env = {
            **clean_environ(),
            "ORCHESTRATOR_PROJECT_DIR": str(project.orch),
            "ORCHESTRATOR_ACTOR": "bench",
            "ORCHESTRATOR_LOG_FORMAT": "json",
            **{
                f"{e.upper()}_DATABASE_URL": cluster.url(names[e])
                for e in ("dev", "staging", "prod")
            },
            **project.key_env,
        }

        def orch(*args: str, cwd: Path = project.orch, env: dict[str, str] = env) -> float:
            start = time.perf_counter()
            done = subprocess.run([str(ORCH), *args], cwd=cwd, env=env, capture_output=True)
            if done.returncode != 0:
                raise RuntimeError(f"{args} exited {done.returncode}: {done.stderr[-2000:]!r}")
            return time.perf_counter() - start

        orch("migrate", "dev")
        orch("migrate", "staging", "--to", rev_id(5))
        orch("migrate", "prod", "--to", rev_id(5))  # prod witnesses staging's head
        grow(cluster.url(names["staging"]), project.key_env["BENCH_STAGING_KEY"], size - 7)
        orch("migrate", "staging")
        first = orch("migrate", "prod", "--to", rev_id(6))  # reads the whole new history
        second = orch("migrate", "prod", "--to", rev_id(7))  # from the head it witnessed
        results[size] = (first, second)
        log(f"  staging chain ~{size} entries: prod's first run {first:.2f}s, next {second:.2f}s")
    small, large = results[10], results[ENTRIES]
    lines = [
        "## A predecessor with a long history",
        "",
        f"`migrate prod` (one revision) after staging's chain grew to ~{ENTRIES:,} entries,",
        "beside the same with ~10: the first run reads and verifies every new entry; the next",
        "reads from the head prod's own signed end entry witnessed.",
        "",
        "| staging's chain | first run after it grew | next run |",
        "|---|---:|---:|",
        f"| ~10 entries | {small[0]:.2f} s | {small[1]:.2f} s |",
        f"| ~{ENTRIES:,} entries | {large[0]:.2f} s | {large[1]:.2f} s |",
        f"| ratio | x{large[0] / small[0]:.2f} | x{large[1] / small[1]:.2f} |",
        "",
    ]
    summary = [
        f"chain history {ENTRIES} entries: next run x{large[1] / small[1]:.2f} of a 10-entry "
        f"predecessor's (first run after it grew x{large[0] / small[0]:.2f})"
    ]
    return "\n".join(lines) + "\n", summary


if __name__ == "__main__":
    raise SystemExit(standalone(chain_bench))
