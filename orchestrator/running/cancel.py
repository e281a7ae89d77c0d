"""SIGTERM and SIGINT: a cancelled run stops between revisions, never inside one.

Outside a revision the signal raises `Cancelled` at once (a run waiting for the lock stops
waiting). While a revision runs it is only noted: the revision finishes (or fails and rolls
back), and the run stops at the next revision boundary (`check`). The run then records
`run.interrupted` itself and releases its lock as its `with` blocks unwind; the exit code is
128 + the signal's number (143 for SIGTERM, 130 for SIGINT).

The first signal is acknowledged at once on stderr (by a watcher thread: a signal handler
must not take the logger's lock). A second SIGINT while a revision runs raises
`StatementCancelled`, a KeyboardInterrupt: psycopg answers that by cancelling the running
statement at the server (the protocol's cancel request, as pg_cancel_backend), the
revision's transaction rolls back, and the run stops as interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from orchestrator.core.errors import Cancelled

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
ACK = "stopping after this revision; Ctrl-C again cancels it"


class StatementCancelled(KeyboardInterrupt):  # noqa: N818 -- psycopg cancels on this class
    """A second Ctrl-C while a revision runs: cancel its statement, roll the revision back."""


class _State:
    inside = 0  # > 0 while a revision may be running: the signal waits
    received: int | None = None
    noticed = threading.Event()  # set by the handler, answered by the watcher


_state = _State()


def _watch() -> None:
    import structlog

    while True:
        _state.noticed.wait()
        _state.noticed.clear()
        signum = _state.received or signal.SIGTERM
        name = NAMES.get(signal.Signals(signum), str(signum))
        structlog.get_logger("orchestrator").warning(
            "run.stopping", signal=name, message=f"{name}: {ACK}"
        )


_watcher: list[threading.Thread] = []


def install() -> None:
    """Take over SIGTERM and SIGINT for this process (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state.received = None
    if not _watcher:
        _watcher.append(threading.Thread(target=_watch, daemon=True, name="signals"))
        _watcher[0].start()
    for signum in NAMES:
        signal.signal(signum, _handler)


def _handler(signum: int, _frame: FrameType | None) -> None:
    first = _state.received is None
    if first:
        _state.received = signum  # the first signal sets the exit code
    if _state.inside == 0:
        raise cancelled()
    if first:
        _state.noticed.set()
    elif signum == signal.SIGINT:
        raise StatementCancelled()


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
