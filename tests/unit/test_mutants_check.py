"""scripts/mutants_check.py (`make lint`): the record of equivalent mutants names mutants
mutmut makes of the code as it is, and nothing else."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mutants_check", REPO / "scripts/mutants_check.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mc = _load()
PATTERNS = ["orchestrator.core.planning.x_ledger_heads*"]
FINGERPRINT = mc.fingerprint("orchestrator.core.planning.ledger_heads")


def record(*entries: str, judged: str = FINGERPRINT) -> str:
    return (
        "# title\n\nprose\n\n## `orchestrator.core.planning.ledger_heads`\n\n"
        f"Judged on: `ledger_heads` {judged}\n\n" + "\n".join(entries)
    )


GROUP = """- why
  and more why
  ```diff
  -        group = None
  +        group = ""
  ```
"""


def problems(text: str, patterns: list[str] = PATTERNS) -> list[str]:
    return mc.check(mc.parse_record(text), patterns)


def test_a_mutant_mutmut_makes_judged_on_the_code_as_it_is_passes() -> None:
    (section,) = mc.parse_record(record(GROUP))
    assert [(e.removed, e.added, e.reason) for e in section.entries] == [
        (("        group = None",), ('        group = ""',), "why and more why")
    ]
    assert problems(record(GROUP)) == []


def test_a_mutant_mutmut_does_not_make_fails() -> None:
    wrong = GROUP.replace('group = ""', "group = 0")
    assert problems(record(wrong)) == [
        "mutants-equivalent.md line 5: orchestrator.core.planning.ledger_heads: "
        "the entry of line 9: mutmut makes no such mutant of it"
    ]
    gone = GROUP.replace("group = None", "group = nothing")
    assert problems(record(gone))[0].endswith("its original line is no longer in the function")


def test_what_else_is_listed_fails() -> None:
    assert problems(record(GROUP, GROUP))[0].endswith("the entry of line 9: listed twice")
    assert problems(record(GROUP), ["orchestrator.core.planning.x_gate*"]) == [
        "mutants-equivalent.md line 5: orchestrator.core.planning.ledger_heads: "
        "no pattern of the Makefile's MUTANTS selects it (never run)"
    ]
    with pytest.raises(mc.RecordError, match="line 9: not an entry"):
        mc.parse_record(record("* a bullet of another kind"))
    with pytest.raises(mc.RecordError, match="without its ```diff block"):
        mc.parse_record(record("- why, and no diff"))
    missing = record(GROUP).replace("ledger_heads`\n", "nowhere`\n", 1)
    assert "no such function" in problems(missing, ["orchestrator.core.planning.*"])[0]
    assert problems("", ["orchestrator.planning.x_gate*"]) == [
        "Makefile MUTANTS: 'orchestrator.planning.x_gate*' selects no function of this tree"
    ]


def test_a_change_to_the_code_it_was_judged_on_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "orchestrator/core/planning.py"
    copy.parent.mkdir(parents=True)
    shutil.copy(REPO / "orchestrator/core/planning.py", copy)
    monkeypatch.setattr(mc, "ROOT", tmp_path)
    monkeypatch.chdir(REPO)  # mutmut reads its configuration here
    source = copy.read_text()
    copy.write_text(source.replace('if revision != "base":', 'if revision not in ("base",):'))
    now = mc.fingerprint("orchestrator.core.planning.ledger_heads")
    assert problems(record(GROUP)) == [
        "mutants-equivalent.md line 5: orchestrator.core.planning.ledger_heads: ledger_heads "
        f"changed since its mutants were judged (fingerprint {FINGERPRINT}, now {now}): "
        f"re-judge them, then write {now}"
    ]
    assert problems(record(GROUP, judged=now)) == []  # re-judged: still that mutant, equivalent
