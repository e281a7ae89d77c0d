"""`make mutants`' report: the mutants of the selected patterns that no test killed.

Usage: python scripts/mutants_report.py PATTERN... (after `mutmut run PATTERN...`).
A surviving mutant named (in backquotes) in mutants-equivalent.md is said to be
equivalent code there, with why; any other survivor is printed with its diff
and fails the target.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "mutants-equivalent.md"
MUTMUT = [sys.executable, "-m", "mutmut"]


def main(patterns: list[str]) -> int:
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
    known = set(re.findall(r"`([\w.]+__mutmut_\d+)`", EQUIVALENT.read_text()))
    # a mutant that makes the tests hang was caught too (they did not pass): named, not failed
    timeouts = sorted(n for n, s in chosen.items() if s == "timeout")
    alive = {n: s for n, s in chosen.items() if s not in ("killed", "timeout")}
    killed = len(chosen) - len(alive) - len(timeouts)
    undocumented = sorted(n for n in alive if n not in known)
    print(
        f"{len(chosen)} mutants: {killed} killed, {len(timeouts)} timed out, "
        f"{len(alive) - len(undocumented)} equivalent, {len(undocumented)} survived"
    )
    for name in timeouts:
        print(f"  timed out: {name}")
    for name in sorted(alive):
        if name in known:
            print(f"  equivalent: {name}")
    for name in undocumented:
        print(f"\nSURVIVED ({alive[name]}): {name}")
        diff = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True)
        print(diff.stdout.rstrip())
    if not chosen:
        print("no mutant matched: did `mutmut run` run?")
        return 1
    return 1 if undocumented else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
