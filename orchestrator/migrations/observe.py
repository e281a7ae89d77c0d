"""What a revision's code opens while it runs: observed, not guessed from its source.

One audit hook (`sys.addaudithook`, PEP 578) is installed per process, the first time a run
watches; it costs a test of one global when nothing watches. While `watching` is active
every `open` for reading (Python's `open`, `io.open_code` of an imported module's source,
`Path.read_text`...) is noted; `take()` returns the project files among them, each with its
sha256 (CRLF normalised, as every checksum), and starts afresh for the next revision.

Project files are the files under the project directory, except installed packages (a
virtualenv inside the project), byte-code caches, the revision files themselves (their
checksum is the gate's), the orchestrator's own state (`.orchestrator/`) and `.git`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.migrations.project_modules import foreign_dirs
from orchestrator.migrations.revisions import checksum_file

__all__ = ["restart", "take", "watching"]

_opened: list[str] | None = None  # raw paths opened for reading since the last take()
_installed = False
_SKIPPED_PARTS = frozenset({"__pycache__", ".git", ".orchestrator"})


def _hook(event: str, args: tuple[Any, ...]) -> None:
    opened = _opened
    if opened is None or event != "open":
        return
    path, mode = args[0], args[1] if len(args) > 1 else None
    if not isinstance(path, (str, bytes, os.PathLike)):  # a file descriptor
        return
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return  # written, not read: no input of the revision
    opened.append(os.fsdecode(path))


class _Watch:
    def __init__(self, root: Path, skip: Sequence[Path]) -> None:
        self.root = Path(os.path.realpath(root))
        self.skip = tuple(str(Path(os.path.realpath(p))) + os.sep for p in skip) + foreign_dirs()

    def digest(self, raw: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for name in dict.fromkeys(raw):
            real = os.path.realpath(name)
            try:
                relative = Path(real).relative_to(self.root)
            except ValueError:
                continue
            if real.startswith(self.skip) or _SKIPPED_PARTS.intersection(relative.parts):
                continue
            try:
                found[relative.as_posix()] = checksum_file(Path(real))
            except OSError:  # gone, a directory: nothing that was read as a file
                continue
        return found


_watch: _Watch | None = None


@contextmanager
def watching(root: Path, skip: Sequence[Path] = ()) -> Iterator[None]:
    """Note the project files under `root` opened meanwhile (nothing under `skip`)."""
    global _opened, _installed, _watch
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    outer = _opened, _watch
    _opened, _watch = [], _Watch(root, skip)
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
    and start afresh; None when nothing watches."""
    global _opened
    if _opened is None or _watch is None:
        return None
    raw, _opened = _opened, None  # hashing opens the files too: not the next revision's reads
    try:
        return _watch.digest(raw)
    finally:
        _opened = []
