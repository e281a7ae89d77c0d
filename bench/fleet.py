"""Fleet benchmark: one environment of 50 databases, sequential vs --parallel 2 and 4,
and a no-op re-run over the whole fleet (issue 8)."""

from __future__ import annotations

from pathlib import Path
from statistics import median
from typing import Any

from measure import Command, run_once

DATABASES = 50
MODES = [
    ("sequential", []),
    ("--parallel 2", ["--parallel", "2"]),
    ("--parallel 4", ["--parallel", "4"]),
]

FLEET_YAML = """\
# the bench's fleet: every name in fleet.txt is one database on the server of FLEET_SERVER_URL
name: fleet
database:
  url_env: FLEET_SERVER_URL
  databases_file: fleet.txt
policy:
  lint: "off"
"""


def fleet_bench(
    cluster: Any, orch_dir: Path, orch: Path, env: dict[str, str], reps: int, log: Any
) -> str:
    """Run the fleet rows; returns the markdown section for results.md."""
    names = [f"fleet_{i:02d}" for i in range(DATABASES)]
    envs_dir = orch_dir / "fleet_environments"
    envs_dir.mkdir(exist_ok=True)
    (envs_dir / "fleet.yaml").write_text(FLEET_YAML, encoding="utf-8")
    (orch_dir / "fleet.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    environ = {
        **env,
        "ORCHESTRATOR_ENVIRONMENTS_DIR": str(envs_dir),
        "FLEET_SERVER_URL": cluster.url("postgres"),
    }

    def command(*extra: str) -> Command:
        return Command([orch, "migrate", "fleet", *extra], orch_dir, environ)

    times: dict[str, list[float]] = {label: [] for label, _ in MODES}
    noop: list[float] = []
    log(f"  fleet of {DATABASES} databases ({reps} repetitions per mode)")
    for rep in range(reps):
        order = MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]  # alternate who goes first
        for label, flags in order:
            for name in names:
                cluster.recreate(name)
            times[label].append(run_once(command(*flags)))
        noop.append(run_once(command("--parallel", "4")))
    base = median(times["sequential"])
    lines = [
        f"## Fleet: {DATABASES} databases, full upgrade of the N=10 history each",
        "",
        "| mode | median wall (s) | ratio to sequential |",
        "|---|---:|---:|",
    ]
    for label, _ in MODES:
        value = median(times[label])
        lines.append(f"| {label} | {value:.3f} | {value / base:.2f} |")
        log(f"    {label:<14} {value:8.3f} s  ratio {value / base:.2f}")
    lines.append(f"| no-op re-run, --parallel 4 | {median(noop):.3f} | {median(noop) / base:.2f} |")
    log(f"    no-op re-run   {median(noop):8.3f} s")
    lines.append("")
    return "\n".join(lines) + "\n"
