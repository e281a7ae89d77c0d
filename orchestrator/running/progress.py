"""Progress while a run's revisions run (the console and the JSON log)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.core.logging import console_active
from orchestrator.running import cancel

if TYPE_CHECKING:
    from orchestrator.running.run import TargetRun


class RevisionTicker:
    """Progress while revisions run: on a terminal a line as each revision starts (revision
    i of n); everywhere, while one runs longer than `interval` seconds, a `migration.running`
    line every `interval` seconds, so a long revision is never silence."""

    def __init__(self, run: TargetRun, revisions: Sequence[str], interval: float) -> None:
        self.run, self.revisions, self.interval = run, list(revisions), interval
        self.index, self.since, self.told = 0, time.monotonic(), 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True, name="progress")

    def __enter__(self) -> RevisionTicker:
        self.next(0)
        if self.interval > 0 and self.revisions:
            self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()

    def next(self, index: int) -> None:
        """Revision `index` (0-based) starts now."""
        with self.lock:
            self.index, self.since, self.told = index, time.monotonic(), 0
        # after a signal, the next revision will not run: never announce it
        if index < len(self.revisions) and console_active() and not cancel.requested():
            self._say(0.0)

    def _tick(self) -> None:
        while not self.stopped.wait(min(self.interval, 0.25)):
            with self.lock:
                index, elapsed = self.index, time.monotonic() - self.since
                due = elapsed >= (self.told + 1) * self.interval
                if due:
                    self.told += 1
            if due and index < len(self.revisions):
                self._say(elapsed, index)

    def _say(self, elapsed: float, index: int | None = None) -> None:
        index = self.index if index is None else index
        revision = self.revisions[index]
        graph = self.run.app.graph
        fields = {
            "env": self.run.env.name,
            "target": self.run.audit.common.get("target"),
            "run_id": self.run.run_id,
            "revision": revision,
            "step": f"{index + 1}/{len(self.revisions)}",
            "doc": graph.get(revision).doc if revision in graph and not elapsed else None,
            "elapsed": f"running for {elapsed:.0f} s" if elapsed else None,
            "elapsed_s": round(elapsed, 1) if elapsed else None,
        }
        self.run.audit.log.info(
            "migration.running", **{k: v for k, v in fields.items() if v is not None}
        )
