"""A connection opened ahead: the round trips of a new connection (TCP, the TLS question, the
startup and its answer) paid in a thread while this one works, not when the engine next
needs one. A run that knows it will open its migration connection opens it while it reads
and judges (readers.open_read_ahead does the same for a read-only connection).

The engine's next new connection is the one opened ahead, ready or not (then it waits for
it). One that failed to open is opened again as usual, so its error is the usual one."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from contextlib import suppress
from typing import Any

from sqlalchemy import Engine

# on the dialect (one per engine): the connections opened ahead, oldest first
_AHEAD = "_orchestrator_ahead"


class _StandIn:
    """The pool's record, while the connection is opened before the pool asks for it."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}


def open_ahead(engine: Engine) -> None:
    """Open one connection of `engine` now, in a thread (PostgreSQL)."""
    if engine.dialect.name != "postgresql":  # a file or in-memory database: nothing to wait for
        return
    dialect: Any = engine.dialect
    creator = engine.pool._creator  # the engine's connect: every do_connect hook, as the pool
    opened: Future[tuple[Any, dict[str, Any]]] = Future()

    def open_one() -> None:
        try:
            stand_in = _StandIn()
            opened.set_result((creator(stand_in), stand_in.info))  # type: ignore[arg-type,call-arg]
        except BaseException as exc:  # noqa: BLE001 -- handed over: the pool connects anew
            opened.set_exception(exc)

    dialect.__dict__.setdefault(_AHEAD, []).append(opened)
    threading.Thread(target=open_one, daemon=True, name="orchestrator-open-ahead").start()


def hand_over(dialect: Any, record: Any, _cargs: Any, _cparams: Any) -> Any:
    """A `do_connect` hook, before the one that connects: the connection opened ahead, if
    any."""
    waiting = dialect.__dict__.get(_AHEAD)
    if not waiting or isinstance(record, _StandIn):  # none, or opening one ahead: connect
        return None
    opened = waiting.pop(0)
    try:
        raw, info = opened.result()
    except Exception:  # noqa: BLE001 -- connect as usual: its error is the one to report
        return None
    if record is not None:
        record.info.update(info)
    return raw


def close_ahead(engine: Engine) -> None:
    """Connections opened ahead and never asked for (the run refused, or failed before):
    closed once open."""
    waiting = engine.dialect.__dict__.get(_AHEAD, [])
    for opened in waiting:
        opened.add_done_callback(_close)
    waiting.clear()


def _close(opened: Future[tuple[Any, dict[str, Any]]]) -> None:
    with suppress(Exception):
        opened.result()[0].close()
