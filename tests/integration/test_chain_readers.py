"""Readers that verify before they believe (SPEC Part 3): `plan ENV` on its own chain, a
release plan's evidence of the predecessor, `keys repair` without the key, and a file a
revision reads swapped while it runs. Real PostgreSQL, the deploy role's own connection,
staging and prod signing; every attack refused and nothing run."""

from __future__ import annotations

from projectkit import SHIPPED, Project
from test_evidence_chain import execute, sign_env, signed

__all__ = ["signed"]  # fixture


def test_plan_names_a_break_in_the_planned_envs_own_chain_and_refuses(signed: Project) -> None:
    assert signed.run("migrate", "dev").code == 0
    assert signed.run("migrate", "staging", "--to", SHIPPED[2]).code == 0
    execute(signed, "staging", "DELETE FROM orchestrator_chain WHERE seq = 2")

    plan = signed.run("plan", "staging")
    assert plan.code == 3, plan.output
    assert "staging's evidence is broken at entry 2" in plan.stdout, plan.output
    assert "keys repair staging" in plan.stdout and "Traceback" not in plan.output
    shown = signed.run("plan", "staging", "--json")
    assert shown.code == 3 and shown.json()["blocker"] == "evidence", shown.output
    assert "entry 2" in shown.json()["evidence_chain"]
    # as the run would be: refused before it writes, nothing changed
    run = signed.run("migrate", "staging")
    assert run.code == 3 and "staging's evidence is broken at entry 2" in run.stderr
    assert signed.version("staging") == [SHIPPED[2]]
    # a release plan for it is refused too: it could never be applied
    out = signed.path / "staging-plan.json"
    written = signed.run("plan", "staging", "--out", str(out))
    assert written.code == 3 and "entry 2" in written.stderr, written.output
    assert not out.exists()
    # nothing to run: said, and no refusal (as `migrate` has nothing to refuse)
    at_target = signed.run("plan", "staging", "--to", SHIPPED[2])
    assert at_target.code == 0, at_target.output
    assert "staging's evidence is broken at entry 2" in at_target.stdout


def test_plan_of_an_env_that_does_not_sign_is_unaffected(pg_project: Project) -> None:
    sign_env(pg_project, "prod")  # prod signs; staging, the planned env, does not
    assert pg_project.run("migrate", "dev").code == 0
    plan = pg_project.run("plan", "staging", "--json")
    assert plan.code == 0, plan.output
    assert "evidence_chain" not in plan.json() and plan.json()["blocker"] is None
