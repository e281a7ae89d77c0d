"""Connections opened ahead: the round trips of a new connection (TCP, the TLS question, the
startup and its answer) paid in a thread while this one works, not when the engine next
needs one. On a network each connection costs several round trips; a run that knows it will
open its migration connection, or read its predecessor, opens them while it reads and judges.

The engine's next new connection (for a database chosen per connection: to that database)
is the one opened ahead, ready or not (then it waits for it). One that failed to open is
opened again as usual, so its error is the usual one. Each waits only for its own network:
a thread per connection, as SQLAlchemy itself would connect."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from typing import Any

from sqlalchemy import Engine

# per dialect (one per engine): the connections opened ahead, by database (None: the URL's)
_AHEAD = "_orchestrator_ahead"


class _StandIn:
    """The pool's record, while the connection is opened before the pool asks for it."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}


def open_ahead(
    engine: Engine, database: str | None = None, before: Callable[[], Any] | None = None
) -> None:
    """Open one connection of `engine` now, in a thread. `before` runs first in that thread
    (what chooses the database, for an engine that chooses it per connection)."""
    if engine.dialect.name != "postgresql":  # a file or in-memory database: nothing to wait for
        return
    dialect: Any = engine.dialect
    if _AHEAD not in dialect.__dict__:
        setattr(dialect, _AHEAD, {})
    creator = engine.pool._creator  # the engine's connect: every do_connect hook, as the pool
    opened: Future[tuple[Any, dict[str, Any]]] = Future()

    def open_one() -> None:
        try:
            if before is not None:
                before()
            stand_in = _StandIn()
            opened.set_result((creator(stand_in), stand_in.info))  # type: ignore[arg-type,call-arg]
        except BaseException as exc:  # noqa: BLE001 -- handed over: the pool connects anew
            opened.set_exception(exc)

    getattr(dialect, _AHEAD).setdefault(database, []).append(opened)
    threading.Thread(target=open_one, daemon=True, name="orchestrator-open-ahead").start()


def hand_over(dialect: Any, record: Any, _cargs: Any, cparams: Any) -> Any:
    """A `do_connect` hook, after those that choose what to connect to and before the one
    that connects: the connection opened ahead for that database, if any."""
    ahead = dialect.__dict__.get(_AHEAD)
    if not ahead or isinstance(record, _StandIn):  # none, or opening one ahead: connect
        return None
    waiting = ahead.get(cparams.get("dbname")) or ahead.get(None)
    if not waiting:
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
    waiting = engine.dialect.__dict__.get(_AHEAD, {})
    for futures in waiting.values():
        for opened in futures:
            opened.add_done_callback(_close)
        futures.clear()


def _close(opened: Future[tuple[Any, dict[str, Any]]]) -> None:
    with suppress(Exception):
        opened.result()[0].close()
