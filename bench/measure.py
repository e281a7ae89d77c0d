"""Timing subprocesses: one command, or several at once; medians."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class BenchError(RuntimeError):
    pass


@dataclass
class Command:
    argv: Sequence[str | Path]
    cwd: Path
    env: Mapping[str, str]
    ok_codes: tuple[int, ...] = (0,)

    def describe(self) -> str:
        return " ".join(str(a) for a in self.argv)


def run_once(cmd: Command) -> float:
    """Wall time of one run, in seconds; a failing run is an error, not a time."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(a) for a in cmd.argv],
        cwd=cmd.cwd,
        env=dict(cmd.env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in cmd.ok_codes:
        raise BenchError(
            f"`{cmd.describe()}` (cwd {cmd.cwd}) exited {done.returncode}\n"
            f"stdout tail:\n{done.stdout[-2000:]}\nstderr tail:\n{done.stderr[-3000:]}"
        )
    return elapsed


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds spent while something ran: by this process and its children ("ours"), and
    by the rest of the machine (on a machine that only runs the benchmark: PostgreSQL)."""

    ours: float
    rest: float


def machine_cpu() -> float | None:
    """Busy CPU seconds of the whole machine since boot (Linux's /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and of its waited-for children."""
    me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def timed_with_cpu(measure: Callable[[], float]) -> tuple[float, CpuSplit | None]:
    """`measure()`'s wall time, and the CPU the machine spent meanwhile, split."""
    machine, ours = machine_cpu(), own_cpu()
    elapsed = measure()
    machine_after, ours_after = machine_cpu(), own_cpu()
    if machine is None or machine_after is None:
        return elapsed, None
    spent = ours_after - ours
    return elapsed, CpuSplit(spent, max(0.0, machine_after - machine - spent))


def run_concurrently(cmds: Sequence[Command]) -> tuple[float, list[float]]:
    """Start every command at once; wall time until the last ends, and each one's time."""
    with tempfile.TemporaryDirectory(prefix="bench-conc-") as tmp:
        procs = []
        start = time.perf_counter()
        for i, cmd in enumerate(cmds):
            out = open(Path(tmp) / f"{i}.out", "w+")  # noqa: SIM115 - closed below
            err = open(Path(tmp) / f"{i}.err", "w+")  # noqa: SIM115
            proc = subprocess.Popen(
                [str(a) for a in cmd.argv],
                cwd=cmd.cwd,
                env=dict(cmd.env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            procs.append((proc, out, err, cmd))
        ends: list[float] = [0.0] * len(procs)
        pending = set(range(len(procs)))
        while pending:
            for i in list(pending):
                if procs[i][0].poll() is not None:
                    ends[i] = time.perf_counter() - start
                    pending.discard(i)
            time.sleep(0.002)
        wall = max(ends)
        problems = []
        for proc, out, err, cmd in procs:
            if proc.returncode not in cmd.ok_codes:
                err.seek(0)
                problems.append(
                    f"`{cmd.describe()}` exited {proc.returncode}: {err.read()[-2000:]}"
                )
            out.close()
            err.close()
        if problems:
            raise BenchError("\n".join(problems))
    return wall, ends


@dataclass
class Sample:
    name: str
    times: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Contender:
    name: str
    measure: Callable[[], float]  # prepares (fresh database...) and returns one wall time


def alternate(
    contenders: Sequence[Contender], reps: int, log: Callable[[str], None]
) -> dict[str, Sample]:
    """Each repetition runs every contender once, the starting one rotating per repetition."""
    samples = {c.name: Sample(c.name) for c in contenders}
    for rep in range(reps):
        k = rep % len(contenders)
        for contender in [*contenders[k:], *contenders[:k]]:
            elapsed = contender.measure()
            samples[contender.name].times.append(elapsed)
            log(f"    rep {rep + 1}/{reps} {contender.name}: {elapsed:.3f}s")
    return samples
