"""`make mutants`' report: the mutants of the selected patterns that no test killed.

Usage: python scripts/mutants_report.py PATTERN... (after `mutmut run PATTERN...`).
A surviving mutant listed in mutants-equivalent.md (by its function and lines, see
scripts/mutants_check.py) is equivalent code, with why; any other survivor is printed with
its diff and fails the target, and so does a listed mutant that a test killed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mutants_check  # noqa: E402  (beside this script)

ROOT = mutants_check.ROOT
MUTMUT = [sys.executable, "-m", "mutmut"]


def listed_names(patterns: list[str]) -> dict[str, mutants_check.Entry]:
    """mutmut's name at HEAD of each listed mutant that the patterns select: its function's
    mutants are numbered in the order mutmut makes them."""
    names = {}
    for section in mutants_check.parse_record(mutants_check.RECORD.read_text()):
        prefix = mutants_check.mutant_pattern_name(section.function).removesuffix("1")
        if not any(fnmatch.fnmatch(prefix + "1", p) for p in patterns):
            continue
        _, mutants = mutants_check.mutants_of(section.function)
        for entry in section.entries:
            if (entry.removed, entry.added) not in mutants:  # `make lint` says more
                raise SystemExit(f"mutants-equivalent.md line {entry.line}: no such mutant")
            number = mutants.index((entry.removed, entry.added)) + 1
            names[f"{prefix}{number}"] = entry
    return names


def main(patterns: list[str]) -> int:
    os.chdir(ROOT)  # mutmut reads its configuration (pyproject.toml) from the working directory
    listing = subprocess.run(
        [*MUTMUT, "results", "--all", "true"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    status = dict(
        (m.group(1), m.group(2)) for m in re.finditer(r"^\s*(\S+): (.+)$", listing, re.MULTILINE)
    )
    chosen = {n: s for n, s in status.items() if any(fnmatch.fnmatch(n, p) for p in patterns)}
    known = listed_names(patterns)
    # a mutant that makes the tests hang was caught too (they did not pass): named, not failed
    timeouts = sorted(n for n, s in chosen.items() if s == "timeout")
    unchecked = sorted(n for n, s in chosen.items() if s == "not checked")
    if unchecked:  # not survivors: the run stopped before them (its log says why)
        print(f"{len(unchecked)} of {len(chosen)} mutants not checked: see mutants-run.log")
        return 1
    alive = {n: s for n, s in chosen.items() if s not in ("killed", "timeout")}
    killed = len(chosen) - len(alive) - len(timeouts)
    undocumented = sorted(n for n in alive if n not in known)
    wrongly_listed = sorted(n for n in known if n in chosen and n not in alive)
    print(
        f"{len(chosen)} mutants: {killed} killed, {len(timeouts)} timed out, "
        f"{len(alive) - len(undocumented)} equivalent, {len(undocumented)} survived"
    )
    for name in timeouts:
        print(f"  timed out: {name}")
    for name in sorted(alive):
        if name in known:
            entry = known[name]
            print(f"  equivalent: {name} ({entry.function}: {' / '.join(entry.added)})")
    for name in undocumented:
        print(f"\nSURVIVED ({alive[name]}): {name}")
        diff = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True)
        print(diff.stdout.rstrip())
    for name in wrongly_listed:
        entry = known[name]
        print(
            f"\nLISTED AS EQUIVALENT, BUT {chosen[name].upper()}: {name}, mutants-equivalent.md "
            f"line {entry.line} ({entry.function}): remove that entry"
        )
    if not chosen:
        print("no mutant matched: did `mutmut run` run?")
        return 1
    return 1 if undocumented or wrongly_listed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
