"""SIGTERM and SIGINT: a cancelled run stops between revisions, never inside one.

Outside a revision the signal raises `Cancelled` at once (a run waiting for the lock stops
waiting). While a revision runs it is only noted: the revision finishes (or fails and rolls
back), and the run stops at the next revision boundary (`check`). The run then records
`run.interrupted` itself and releases its lock as its `with` blocks unwind; the exit code is
128 + the signal's number (143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from orchestrator.core.errors import Cancelled

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class _State:
    inside = 0  # > 0 while a revision may be running: the signal waits
    received: int | None = None


_state = _State()


def install() -> None:
    """Take over SIGTERM and SIGINT for this process (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state.received = None
    for signum in NAMES:
        signal.signal(signum, _handler)


def _handler(signum: int, _frame: FrameType | None) -> None:
    _state.received = signum
    if _state.inside == 0:
        raise cancelled()


def cancelled(done: str = "") -> Cancelled:
    signum = _state.received or signal.SIGTERM
    name = NAMES.get(signal.Signals(signum), str(signum))
    return Cancelled(f"Stopped by {name}{done}.", exit_code=128 + int(signum))


@contextmanager
def revisions_running() -> Iterator[None]:
    """While revisions run: a signal waits for the revision in progress to end."""
    _state.inside += 1
    try:
        yield
    finally:
        _state.inside -= 1


def requested() -> bool:
    return _state.received is not None


def check(done: str = "") -> None:
    """At a revision boundary: stop here if a signal came."""
    if _state.received is not None:
        raise cancelled(done)
