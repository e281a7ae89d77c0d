"""What lint findings tell the user: a refusal, a warning ahead, the waiver lines to add."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from orchestrator.migrations.lint.findings import Finding


def rules_by_revision(findings: Iterable[Finding]) -> dict[str, list[str]]:
    """Each revision's rules, in the order found, once each."""
    out: dict[str, list[str]] = {}
    for f in findings:
        rules = out.setdefault(f.revision, [])
        if f.rule not in rules:
            rules.append(f.rule)
    return out


def waiver_advice(env_file: str, rules: Mapping[str, Sequence[str]], has_waivers: bool) -> str:
    """Where and what to add to an environment file to waive `rules` (revision -> rules) on
    that environment only: the exact YAML lines, quoted ids (YAML reads `1e10` as a number)."""
    body = "\n".join(f'    "{rev}": [{", ".join(names)}]' for rev, names in rules.items())
    if has_waivers:
        return f"add to {env_file}, under `policy:` `lint_waivers:`:\n{body}"
    return f"add to {env_file}, under `policy:`:\n  lint_waivers:\n{body}"


def _listed(bad: Sequence[Finding]) -> str:
    return "; ".join(
        f"{f.revision} breaks {f.rule}"
        + (f" (line {f.line} of its SQL)" if f.line is not None else "")
        + f": {f.message.rstrip('.')}"
        for f in bad
    )


def refusal_message(
    env: str,
    bad: Sequence[Finding],
    files: Mapping[str, str],
    env_file: str,
    has_waivers: bool = False,
    predecessor: str | None = None,
) -> str:
    """Why lint refused a run: every finding, each rule's advice once, and the exact lines
    of the environment file that waive them on `env` only. `files`: revision -> file name.

    A waiver in the revision's file changes its checksum: where a `predecessor` ran the
    revision already, that would be drift there, so only the environment file is offered."""
    advice: dict[str, str] = {}
    for f in bad:
        if f.help and f.rule not in advice:
            advice[f.rule] = f.help.rstrip(".")
    helped = " ".join(f"{rule}: {text}." for rule, text in advice.items())
    rules = rules_by_revision(bad)
    text = (
        f"Refused by lint on {env}: {_listed(bad)}. {helped + ' ' if helped else ''}"
        f"Where it is safe on {env}, "
        f"waive it there for these revisions only (the revision files, and their checksums, "
        f"stay as they are): {waiver_advice(env_file, rules, has_waivers)}\n"
    )
    if predecessor is None:
        in_file = "; ".join(
            f"in {files.get(rev, rev)}: "
            + ", ".join(f"`# orchestrator: allow {rule}`" for rule in names)
            for rev, names in rules.items()
        )
        return (
            text + "Or fix the migrations, or, before any environment runs them, waive in the "
            f"revision's file with a line saying why ({in_file})."
        )
    return text + (
        f"Or fix it with a new revision ({predecessor} has run these files: do not edit them)."
    )


def ahead_warning(env: str, bad: Sequence[Finding], env_file: str, has_waivers: bool) -> str:
    """What a later environment's lint will refuse, said before it comes to that."""
    return (
        f"{env} (lint: error) will refuse {_listed(bad)}. Fix it now, or once reviewed waive "
        f"it on {env}: {waiver_advice(env_file, rules_by_revision(bad), has_waivers)}"
    )
