"""What a revision's code opens while it runs: observed, not guessed from its source.

One audit hook (`sys.addaudithook`, PEP 578) is installed per process, the first time a run
watches; it costs a test of one global when nothing watches. While `watching` is active
every `open` for reading (Python's `open`, `io.open_code` of an imported module's source,
`Path.read_text`...) of a project file is noted with its sha256 (CRLF normalised, as every
checksum) as it is opened, not later: a file swapped before the revision reads it and put
back before its COMMIT is recorded as read. `take()` returns them, and starts afresh for the
next revision. A file whose content differs at a later open (or at `take()`) changed while
the revision ran: it is recorded with a digest no file has, so that it never passes for
what another run read.

Project files are the files under the project directory, except installed packages (a
virtualenv inside the project), byte-code caches, the revision files themselves (their
checksum is the gate's), the orchestrator's own state (`.orchestrator/`) and `.git`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.migrations.project_modules import foreign_dirs
from orchestrator.migrations.revisions.checksums import checksum_file

__all__ = ["restart", "take", "watching"]

_opened: dict[str, str] | None = None  # project file -> sha256 read since the last take()
_installed = False
_busy = False  # hashing a file opens it too: not a read of the revision's
_SKIPPED_PARTS = frozenset({"__pycache__", ".git", ".orchestrator"})


def _hook(event: str, args: tuple[Any, ...]) -> None:
    opened, watch = _opened, _watch
    if opened is None or watch is None or event != "open" or _busy:
        return
    path, mode = args[0], args[1] if len(args) > 1 else None
    if not isinstance(path, (str, bytes, os.PathLike)):  # a file descriptor
        return
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return  # written, not read: no input of the revision
    try:
        watch.note(opened, os.fsdecode(path))
    except Exception:  # noqa: BLE001 -- a hook must never break the open it watches
        return


class _Watch:
    def __init__(self, root: Path, skip: Sequence[Path]) -> None:
        self.root = Path(os.path.realpath(root))
        self.skip = tuple(str(Path(os.path.realpath(p))) + os.sep for p in skip) + foreign_dirs()

    def project_file(self, name: str) -> tuple[str, Path] | None:
        """(path relative to the root, real path) of a project file; None for another."""
        real = os.path.realpath(name)
        try:
            relative = Path(real).relative_to(self.root)
        except ValueError:
            return None
        if real.startswith(self.skip) or _SKIPPED_PARTS.intersection(relative.parts):
            return None
        return relative.as_posix(), Path(real)

    def note(self, found: dict[str, str], name: str) -> None:
        """Record a project file's sha256 as it is now."""
        global _busy
        place = self.project_file(name)
        if place is None:
            return
        _busy = True
        try:
            digest = checksum_file(place[1])
        except OSError:  # gone, a directory: nothing that was read as a file
            return
        finally:
            _busy = False
        _record(found, place[0], digest)


def _record(found: dict[str, str], name: str, digest: str) -> None:
    """A file read with two contents is recorded as neither: the sha256 of both digests,
    which no file has, so it never passes for what another run read."""
    before = found.get(name)
    if before is None or before == digest:
        found[name] = digest
    else:
        found[name] = hashlib.sha256(f"read changing: {before} {digest}".encode()).hexdigest()


_watch: _Watch | None = None


@contextmanager
def watching(root: Path, skip: Sequence[Path] = ()) -> Iterator[None]:
    """Note the project files under `root` opened meanwhile (nothing under `skip`)."""
    global _opened, _installed, _watch
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    outer = _opened, _watch
    _opened, _watch = {}, _Watch(root, skip)
    try:
        yield
    finally:
        _opened, _watch = outer


def restart() -> None:
    """Forget what was opened so far (env.py, Alembic loading the revisions): the next
    revision starts from nothing."""
    if _opened is not None:
        _opened.clear()


def take() -> dict[str, str] | None:
    """The project files read since the last take (path relative to the root -> sha256),
    and start afresh; None when nothing watches. Each is hashed once more: one changed
    since it was read (put back, or swapped after) is recorded with its other content."""
    global _opened
    if _opened is None or _watch is None:
        return None
    read, _opened = _opened, None  # hashing opens the files too: not the next revision's reads
    try:
        found = dict(read)
        for name in read:  # put back or swapped since it was read: it changed while it ran
            _watch.note(found, str(_watch.root / name))
        return found
    finally:
        _opened = {}
