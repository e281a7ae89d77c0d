"""`make lint`: mutants-equivalent.md still names mutants mutmut makes at HEAD, judged on the
code as it is now. No mutmut run: mutmut's own generator, on the named functions only (~1 s).

An entry names a function and one mutant of it by its lines, as `mutmut show` prints them (not
by mutmut's running number, which moves whenever code changes), with why it is equivalent.
Fails when:
- anything in the file is not an entry, or an entry is listed twice;
- an entry's function is gone, or no pattern of the Makefile's MUTANTS selects it;
- a function the reasons were judged on changed (its fingerprint is not the one written):
  re-judge those entries, then write the new fingerprint (`--fingerprint module.function`);
- the original line is no longer in the function, or mutmut makes no mutant (or more than
  one) with exactly those lines.
Also: every MUTANTS pattern selects a function that exists (a moved module selects nothing).
`scripts/mutants_report.py` matches a `make mutants` run's survivors with the same entries.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "mutants-equivalent.md"
MAKEFILE = ROOT / "Makefile"

Lines = tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    function: str  # module.function or module.Class.method
    removed: Lines  # the original line(s), as `mutmut show` prints them
    added: Lines  # the mutated line(s)
    reason: str
    line: int  # in the record, for messages


@dataclass
class Section:
    function: str
    line: int
    judged_on: dict[str, str] = field(default_factory=dict)  # name in its module -> fingerprint
    entries: list[Entry] = field(default_factory=list)


class RecordError(Exception):
    pass


# -- the record ----------------------------------------------------------------------------

_HEADING = re.compile(r"^## `([\w.]+)`$")
_JUDGED = re.compile(r"^Judged on: (.+)$")
_FINGERPRINT = re.compile(r"^`([\w.]+)` ([0-9a-f]{12})$")


def parse_record(text: str) -> list[Section]:
    """The sections of the record. Each: a heading naming the function (in backquotes), a
    `Judged on:` line (backquoted name and fingerprint, comma-separated; names relative to
    the function's module), then its entries: `- why`, then a fenced `diff` block of `-`
    original and `+` mutated lines."""
    sections: list[Section] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) and not lines[i].startswith("## "):
        i += 1  # the title and the prose above the first section
    while i < len(lines):
        line = lines[i]
        where = i + 1
        i += 1
        if not line.strip():
            continue
        if heading := _HEADING.match(line):
            sections.append(Section(heading.group(1), where))
            continue
        if not sections:
            raise RecordError(f"line {where}: not in a section: {line!r}")
        section = sections[-1]
        if judged := _JUDGED.match(line):
            for item in judged.group(1).split(", "):
                pair = _FINGERPRINT.match(item)
                if pair is None:
                    raise RecordError(f"line {where}: not `name` fingerprint: {item!r}")
                section.judged_on[pair.group(1)] = pair.group(2)
            continue
        if not line.startswith("- "):
            raise RecordError(f"line {where}: not an entry: {line!r}")
        reason = [line[2:].strip()]
        while i < len(lines) and lines[i].startswith("  ") and lines[i].strip() != "```diff":
            reason.append(lines[i].strip())
            i += 1
        if i >= len(lines) or lines[i].strip() != "```diff":
            raise RecordError(f"line {where}: an entry without its ```diff block")
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        i += 1
        removed: list[str] = []
        added: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body = lines[i].removeprefix(indent)
            if body[:1] not in ("-", "+"):
                raise RecordError(f"line {i + 1}: a diff line is `-` or `+`: {lines[i]!r}")
            (removed if body[0] == "-" else added).append(body[1:])
            i += 1
        if i >= len(lines) or not (removed or added):
            raise RecordError(f"line {where}: an empty or unclosed diff")
        i += 1
        entry = Entry(section.function, tuple(removed), tuple(added), " ".join(reason), where)
        section.entries.append(entry)
    return sections


# -- the code ------------------------------------------------------------------------------


def locate(function: str) -> tuple[Path, str, str | None, str]:
    """`module.function` or `module.Class.method`: its file, module, class and name."""
    parts = function.split(".")
    for cut in (len(parts) - 1, len(parts) - 2):
        path = ROOT / ("/".join(parts[:cut]) + ".py")
        if cut > 0 and path.is_file():
            owner = parts[cut] if cut == len(parts) - 2 else None
            return path, ".".join(parts[:cut]), owner, parts[-1]
    raise RecordError(f"{function}: no module of it in this tree")


def find_node(
    tree: ast.Module, owner: str | None, name: str
) -> tuple[ast.stmt, ast.FunctionDef | ast.AsyncFunctionDef] | None:
    """The top-level statement holding the function, and the function."""
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if owner is None and isinstance(node, defs) and node.name == name:
            return node, node
        if owner is not None and isinstance(node, ast.ClassDef) and node.name == owner:
            for method in node.body:
                if isinstance(method, defs) and method.name == name:
                    return node, method
    return None


def fingerprint(function: str) -> str:
    """mutmut's own hash of a function (comments and layout aside): sha256 of its AST."""
    path, _, owner, name = locate(function)
    found = find_node(ast.parse(path.read_text()), owner, name)
    if found is None:
        raise RecordError(f"{function}: no such function")
    return hashlib.sha256(ast.dump(found[1], annotate_fields=False).encode()).hexdigest()[:12]


def mutants_of(
    function: str, near: set[str] | None = None
) -> tuple[list[str], list[tuple[Lines, Lines]]]:
    """The function's lines, and each mutant mutmut makes of it, in its order: (removed,
    added) lines, as `mutmut show` prints them. Mutated alone with its class, if any: the
    same mutants as in the whole file, for a fraction of the time. With `near`, only the
    mutants of a node on one of those lines (stripped): the others cannot remove them."""
    import libcst as cst  # dev tools: mutmut and its libcst
    from libcst.metadata import MetadataWrapper, PositionProvider
    from mutmut.mutation.file_mutation import create_mutations, deep_replace

    path, _, owner, name = locate(function)
    source = path.read_text()
    found = find_node(ast.parse(source), owner, name)
    if found is None:
        raise RecordError(f"{function}: no such function")
    top = found[0]
    start = min([top.lineno, *(d.lineno for d in getattr(top, "decorator_list", []))])
    snippet = "".join(source.splitlines(keepends=True)[start - 1 : top.end_lineno])
    module, mutations, _, _ = create_mutations(str(path.relative_to(ROOT)), snippet)
    body = module.body[-1]  # the snippet's one statement: the function, or its class
    if owner is not None:
        assert isinstance(body, cst.ClassDef) and isinstance(body.body, cst.IndentedBlock)
        (node,) = (
            m for m in body.body.body if isinstance(m, cst.FunctionDef) and m.name.value == name
        )
    else:
        node = body  # type: ignore[assignment]
    assert isinstance(node, cst.FunctionDef)
    original = cst.Module([node]).code.strip().split("\n")
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    lines = snippet.splitlines()
    result = []
    for mutation in mutations:
        at = positions[mutation.original_node]
        span = {line.strip() for line in lines[at.start.line - 1 : at.end.line]}
        if near is not None and not span & near:
            continue  # rendering a mutant costs a rewrite of the function: only those asked
        if mutation.contained_by_top_level_function is node:
            mutant = deep_replace(node, mutation.original_node, mutation.mutated_node)
            changed = cst.Module([mutant]).code.strip().split("\n")  # type: ignore[list-item]
            result.append(diff_lines(original, changed))
    return original, result


def diff_lines(original: list[str], changed: list[str]) -> tuple[Lines, Lines]:
    diff = list(difflib.unified_diff(original, changed, lineterm="", n=0))[2:]  # no headers
    return (
        tuple(line[1:] for line in diff if line.startswith("-")),
        tuple(line[1:] for line in diff if line.startswith("+")),
    )


def mutant_pattern_name(function: str) -> str:
    """A name mutmut gives the function's mutants: module.x_f__mutmut_1, module.xǁCǁm__mutmut_1."""
    _, module, owner, name = locate(function)
    mangled = f"xǁ{owner}ǁ{name}" if owner else f"x_{name}"
    return f"{module}.{mangled}__mutmut_1"


def makefile_patterns() -> list[str]:
    block = re.search(r"^MUTANTS := \\\n((?:\t.*\n)+)", MAKEFILE.read_text(), re.MULTILINE)
    if block is None:
        raise RecordError("Makefile: no MUTANTS := block")
    return re.findall(r"'([^']+)'", block.group(1))


def functions_of_pattern(pattern: str) -> list[str]:
    """The functions of this tree that a MUTANTS pattern selects."""
    module = re.split(r"\.x[_ǁ*]|\.\*", pattern)[0]
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        return []
    found = []
    for node in ast.parse(path.read_text()).body:
        methods = node.body if isinstance(node, ast.ClassDef) else [node]
        owner = node.name if isinstance(node, ast.ClassDef) else None
        for method in methods:
            if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
                mangled = f"xǁ{owner}ǁ{method.name}" if owner else f"x_{method.name}"
                if fnmatch.fnmatch(f"{module}.{mangled}__mutmut_1", pattern):
                    found.append(mangled)
    return found


# -- the check -----------------------------------------------------------------------------


def check(sections: list[Section], patterns: list[str]) -> list[str]:
    problems = [
        f"Makefile MUTANTS: {p!r} selects no function of this tree"
        for p in patterns
        if not functions_of_pattern(p)
    ]
    names = [s.function for s in sections]
    for section in sections:
        where = f"mutants-equivalent.md line {section.line}: {section.function}"
        if names.count(section.function) > 1:
            problems.append(f"{where}: a second section for it")
        try:
            problems += [f"{where}: {p}" for p in check_section(section, patterns)]
        except RecordError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def check_section(section: Section, patterns: list[str]) -> list[str]:
    problems = []
    _, module, owner, name = locate(section.function)
    if not any(fnmatch.fnmatch(mutant_pattern_name(section.function), p) for p in patterns):
        problems.append("no pattern of the Makefile's MUTANTS selects it (never run)")
    if not section.entries:
        problems.append("a section with no entry")
    if (f"{owner}.{name}" if owner else name) not in section.judged_on:
        problems.append("`Judged on:` does not name it")
    for relative, old in section.judged_on.items():
        now = fingerprint(f"{module}.{relative}")
        if now != old:
            problems.append(
                f"{relative} changed since its mutants were judged (fingerprint {old}, now "
                f"{now}): re-judge them, then write {now}"
            )
    near: set[str] | None = {line.strip() for e in section.entries for line in e.removed}
    if not all(entry.removed for entry in section.entries):
        near = None  # a mutant that only adds lines: no line to look near
    original, mutants = mutants_of(section.function, near)
    keys = [(entry.removed, entry.added) for entry in section.entries]
    for entry in section.entries:
        at = f"the entry of line {entry.line}"
        count = mutants.count((entry.removed, entry.added))
        if keys.count((entry.removed, entry.added)) > 1:
            problems.append(f"{at}: listed twice")
        elif count > 1:
            problems.append(f"{at}: {count} mutants have these lines; one entry, one mutant")
        elif count == 0 and not all(line in original for line in entry.removed):
            problems.append(f"{at}: its original line is no longer in the function")
        elif count == 0:
            problems.append(f"{at}: mutmut makes no such mutant of it")
    return problems


def main(argv: list[str]) -> int:
    os.chdir(ROOT)  # mutmut reads its configuration (pyproject.toml) from the working directory
    try:
        if argv[:1] == ["--fingerprint"]:
            for function in argv[1:]:
                _, module, _, _ = locate(function)
                print(f"`{function.removeprefix(module + '.')}` {fingerprint(function)}")
            return 0
        problems = check(parse_record(RECORD.read_text()), makefile_patterns())
    except RecordError as exc:
        problems = [f"mutants-equivalent.md: {exc}"]
    except ImportError as exc:
        problems = [f"needs the dev tools (make install): {exc}"]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
