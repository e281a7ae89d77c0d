"""The benchmark's throwaway PostgreSQL: the test harness's PgCluster, with durability ON.

tests/pgcluster.py starts its server with fsync, synchronous_commit and full_page_writes
off (fine for tests, wrong for timing commits). We reuse the class unchanged and only
rewrite the `-o` options of its `pg_ctl start` call, so test behaviour is untouched.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from pgcluster import PgCluster  # noqa: E402

_DURABLE = {
    "-c fsync=off": "-c fsync=on",
    "-c synchronous_commit=off": "-c synchronous_commit=on",
    "-c full_page_writes=off": "-c full_page_writes=on",
}


class DurableCluster(PgCluster):
    """PgCluster with fsync=on, synchronous_commit=on, full_page_writes=on."""

    def _run_pg(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        if what == "pg_ctl start" and "-o" in argv:
            i = argv.index("-o") + 1
            opts = argv[i]
            for old, new in _DURABLE.items():
                opts = opts.replace(old, new)
            argv = [*argv[:i], opts, *argv[i + 1 :]]
        return super()._run_pg(argv, what)

    def settings(self) -> dict[str, str]:
        with self.connect("postgres") as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync','synchronous_commit','full_page_writes','server_version','wal_sync_method')"
            ).fetchall()
        return {str(k): str(v) for k, v in rows}

    def recreate(self, name: str, checkpoint: bool = True) -> None:
        """`name` empty again, and the server's dirty pages on disk: the checkpoint that the
        last run's writes (1,000 new tables, say) call for is paid here, untimed, not by
        whichever run is timed next."""
        self.drop_database(name)
        self.create_database(name)
        if checkpoint:
            self.checkpoint()

    def checkpoint(self) -> None:
        with self.connect("postgres") as conn:
            conn.execute("CHECKPOINT")

    @contextmanager
    def setup_mode(self) -> Iterator[None]:
        """fsync off while the block creates what is measured later (500 databases take
        minutes with it on); back on, and a checkpoint, before anything is timed."""
        with self.connect("postgres") as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("SELECT pg_reload_conf()")
        try:
            yield
        finally:
            with self.connect("postgres") as conn:
                conn.execute("ALTER SYSTEM RESET fsync")
                conn.execute("SELECT pg_reload_conf()")
                conn.execute("CHECKPOINT")
