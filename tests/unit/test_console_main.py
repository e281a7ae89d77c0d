"""The `orchestrator` command keeps the garbage collector off its imports, and only them
(issue 18: imports with the collector on took a fifth longer)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli.shared import load_app
from orchestrator.core.errors import UsageError


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A directory with no project: loading one fails, after the collector's switch."""
    monkeypatch.chdir(tmp_path)
    for name in ("ORCHESTRATOR_PROJECT_DIR", "ORCHESTRATOR_ENVIRONMENTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield
    gc.unfreeze()  # this test process's objects back under the collector
    gc.enable()


def test_a_command_collects_again_once_it_loads_its_project(nowhere: None) -> None:
    """console_main turns the collector off; every command that reads a database loads a
    project, and from there it must collect again, or a fleet run's garbage would pile up
    for its whole length."""
    gc.disable()  # as console_main leaves it
    with pytest.raises(UsageError):
        load_app()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what the imports made is out of the collector's way


def test_main_called_in_process_leaves_the_collector_as_it_found_it(nowhere: None) -> None:
    """Only the command's own entry point switches the collector: a program that calls
    main() keeps its collector on and nothing of its own frozen."""
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with pytest.raises(UsageError):
        load_app()
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
