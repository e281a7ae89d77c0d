"""A loopback TCP proxy in front of PostgreSQL that adds network latency and counts.

Used by `make bench` (bench/network.py) and by the tests that pin round trips and
connections (tests/integration/test_round_trips.py). Stdlib only.

    with LatencyProxy(upstream_port=5432, rtt_ms=10) as proxy:
        url = proxy.url("postgresql+psycopg://postgres@127.0.0.1:5432/db")
        ...                       # run a client against `url`
        proxy.counts()            # Counts(connections=1, round_trips=47)

What it counts, per client connection: a **round trip** is the client speaking after the
server last spoke (or first, on a new connection), so connecting (libpq's SSL question and
the startup), authentication, every query that waits for its answer, and the closing message
each count, whatever tool is the client. Several messages the client sends before reading an answer
(a pipeline, a multi-statement query) are one round trip.

Latency: each direction delays what it carries by half the round-trip time (`rtt_ms`), in
order, without slowing the bytes behind it; a new connection first pays one full round trip
(the handshake). Listens on 127.0.0.1 only; stops by itself after `lifetime` seconds, and
accepts at most `max_connections` at once.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Counts", "LatencyProxy"]

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_PROTOCOL_3 = 196608


@dataclass(frozen=True)
class Counts:
    connections: int
    round_trips: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.connections - other.connections, self.round_trips - other.round_trips)


@dataclass
class _Link:
    """One client connection: who spoke last, and (with `record`) what the client said in
    each of its round trips."""

    number: int
    last: str = ""  # "" (nobody yet), "client" or "server"
    round_trips: int = 0
    buffer: bytes = b""
    started: bool = False  # the startup message went by: typed messages follow
    said: list[list[str]] = field(default_factory=list)


class LatencyProxy:
    def __init__(
        self,
        upstream_port: int,
        rtt_ms: float = 0.0,
        *,
        upstream_host: str = "127.0.0.1",
        record: bool = False,
        lifetime: float = 3600.0,
        max_connections: int = 256,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = rtt_ms / 2000.0  # seconds, one way
        self.record = record
        self.lifetime, self.max_connections = lifetime, max_connections
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._sockets: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="latency-proxy")

    # -- use ---------------------------------------------------------------------------------

    def __enter__(self) -> LatencyProxy:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._deadline = time.monotonic() + self.lifetime
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        _close(self._listener)

    def set_rtt(self, rtt_ms: float) -> None:
        self.delay = rtt_ms / 2000.0

    def url(self, url: str) -> str:
        """`url` (host 127.0.0.1 or localhost, any port) through this proxy."""
        parts = urlsplit(url)
        userinfo, _, _hostport = parts.netloc.rpartition("@")
        netloc = f"{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def counts(self) -> Counts:
        with self._lock:
            return Counts(len(self._links), sum(link.round_trips for link in self._links))

    def reset(self) -> None:
        """Count from zero (a connection still open is no longer counted)."""
        with self._lock:
            self._links = []

    def transcript(self) -> list[list[list[str]]]:
        """With `record`: per connection, per round trip, the messages the client sent
        (`Q <sql>`, `P <sql>`, `X`, ...), shortened."""
        with self._lock:
            return [list(link.said) for link in self._links]

    # -- the proxy -----------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopped.is_set() and time.monotonic() < self._deadline:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with self._lock:
                full = len(self._sockets) >= 2 * self.max_connections
            if full:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                link = _Link(len(self._links))
                self._links.append(link)
                self._sockets.update((client, server))
            handshake = 2 * self.delay  # the client's first bytes wait one full round trip more
            for source, sink, side, first in (
                (client, server, "client", handshake),
                (server, client, "server", 0.0),
            ):
                threading.Thread(
                    target=self._pump,
                    args=(source, sink, side, link, first),
                    daemon=True,
                    name=f"latency-proxy-{side}",
                ).start()
        self._stopped.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)

    def _pump(
        self, source: socket.socket, sink: socket.socket, side: str, link: _Link, first: float
    ) -> None:
        """Read from `source`, count, and hand to a sender that delivers each chunk `delay`
        after it arrived."""
        outbox: queue.Queue[tuple[float, bytes]] = queue.Queue()
        sender = threading.Thread(target=self._send, args=(outbox, sink), daemon=True)
        sender.start()
        extra = first
        try:
            while not self._stopped.is_set():
                try:
                    data = source.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                self._note(link, side, data)
                outbox.put((time.monotonic() + self.delay + extra, data))
                extra = 0.0
        finally:
            outbox.put((0.0, b""))  # end: the sender closes the other side once delivered
            sender.join(timeout=30)
            with self._lock:
                self._sockets.discard(source)
            _close(source)

    def _send(self, outbox: queue.Queue[tuple[float, bytes]], sink: socket.socket) -> None:
        while True:
            due, data = outbox.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                sink.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _note(self, link: _Link, side: str, data: bytes) -> None:
        with self._lock:
            if side == "server":
                link.last = "server"
                return
            if link.last != "client":
                link.round_trips += 1
                link.last = "client"
                if self.record:
                    link.said.append([])
            if self.record:
                link.buffer += data
                link.said[-1].extend(_messages(link))


def _messages(link: _Link) -> list[str]:
    """The whole client messages in `link.buffer`, described briefly; the rest stays."""
    out = []
    buf = link.buffer
    while True:
        if not link.started:  # untyped: SSLRequest, GSSENCRequest, then the startup message
            if len(buf) < 8:
                break
            length, code = struct.unpack("!II", buf[:8])
            if len(buf) < length:
                break
            out.append("ssl?" if code in (_SSL_REQUEST, _GSS_REQUEST) else "startup")
            link.started = code == _PROTOCOL_3
            buf = buf[length:]
            continue
        if len(buf) < 5:
            break
        kind = chr(buf[0])
        (length,) = struct.unpack("!I", buf[1:5])
        if len(buf) < 1 + length:
            break
        body = buf[5 : 1 + length]
        buf = buf[1 + length :]
        if kind == "Q":
            out.append("Q " + _short(body.rstrip(b"\0")))
        elif kind == "P":
            _name, _, rest = body.partition(b"\0")
            out.append("P " + _short(rest.partition(b"\0")[0]))
        elif kind not in "BDES":  # bind/describe/execute/sync go with their parse
            out.append(kind)
    link.buffer = buf
    return out


def _short(sql: bytes, width: int = 160) -> str:
    text = " ".join(sql.decode("utf-8", "replace").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
