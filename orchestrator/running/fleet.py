"""Fan a command out over the databases of an environment (tenants, shards, regions).

Alembic's runtime is process-global, so parallel work runs in worker processes (fork),
each target with its own lock, ledger and audit trail, exactly as a single database.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.core.config import Target
from orchestrator.core.errors import OrchestratorError, UsageError

if TYPE_CHECKING:
    from concurrent.futures import Future


@dataclass(frozen=True)
class FleetOptions:
    parallel: int = 1
    canary: int = 0
    on_error: str = "stop"  # stop | continue
    shard: tuple[int, int] | None = None  # (I, N), 1-based
    # called with (result, done, total) as each database finishes: the CLI prints it at once
    on_result: Callable[[Any, int, int], None] | None = field(default=None, compare=False)


def parse_shard(
    value: str | None, environ: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """`I/N` (1-based), or `auto`: the shard the CI or scheduler gave this job."""
    if not value:
        return None
    if value.strip() == "auto":
        return _auto_shard(os.environ if environ is None else environ)
    return _shard(value, f"--shard {value!r}")


def _shard(value: str, what: str) -> tuple[int, int]:
    try:
        index, total = (int(part) for part in value.split("/"))
    except ValueError:
        raise UsageError(f"{what}: expected I/N, e.g. 1/4.") from None
    if not 1 <= index <= total:
        raise UsageError(f"{what}: I must be between 1 and N.")
    return index, total


def _auto_shard(environ: Mapping[str, str]) -> tuple[int, int]:
    """GitLab's `parallel:` (CI_NODE_INDEX is 1-based), a Kubernetes Indexed Job
    (JOB_COMPLETION_INDEX is 0-based, the total in ORCHESTRATOR_SHARD_TOTAL), or ours."""
    if environ.get("ORCHESTRATOR_SHARD"):
        return _shard(environ["ORCHESTRATOR_SHARD"], "ORCHESTRATOR_SHARD")
    if environ.get("CI_NODE_INDEX") and environ.get("CI_NODE_TOTAL"):
        value = f"{environ['CI_NODE_INDEX']}/{environ['CI_NODE_TOTAL']}"
        return _shard(value, "CI_NODE_INDEX/CI_NODE_TOTAL")
    if environ.get("JOB_COMPLETION_INDEX"):
        if not environ.get("ORCHESTRATOR_SHARD_TOTAL"):
            raise UsageError(
                "--shard auto: JOB_COMPLETION_INDEX is set but ORCHESTRATOR_SHARD_TOTAL is not; "
                "set it to the Job's `completions`."
            )
        try:
            index = int(environ["JOB_COMPLETION_INDEX"]) + 1
        except ValueError:
            raise UsageError("--shard auto: JOB_COMPLETION_INDEX is not a number.") from None
        value = f"{index}/{environ['ORCHESTRATOR_SHARD_TOTAL']}"
        return _shard(value, "JOB_COMPLETION_INDEX/ORCHESTRATOR_SHARD_TOTAL")
    raise UsageError(
        "--shard auto: no shard is set. Set ORCHESTRATOR_SHARD=I/N, or run it as a GitLab "
        "`parallel:` job (CI_NODE_INDEX/CI_NODE_TOTAL) or a Kubernetes Indexed Job "
        "(JOB_COMPLETION_INDEX with ORCHESTRATOR_SHARD_TOTAL)."
    )


def select_shard(targets: Sequence[Target], shard: tuple[int, int] | None) -> list[Target]:
    """Every N-th target from the I-th: a stable split that needs no coordination."""
    if shard is None:
        return list(targets)
    index, total = shard
    return list(targets[index - 1 :: total])


Work = Callable[[Target], Any]
_work: Work | None = None  # set before forking; workers inherit it


def _run(target: Target) -> Any:
    assert _work is not None
    return _guarded(_work, target)


def _guarded(work: Work, target: Target) -> Any:
    """One target's outcome as a result: its failure never takes the rest of the fleet down."""
    from orchestrator.core.results import error_result

    try:
        return work(target)
    except OrchestratorError as exc:
        own = [r for r in exc.details.get("results", []) if r.target == target.name]
        result = own[-1] if own else error_result(target.env, target.name, "", exc)
        if getattr(result, "audit_head", None) is None:
            result.audit_head = exc.details.get("audit_head")
        return result
    except Exception as exc:  # a surprise on one database: report it, go on with the others
        return _failed(target, exc)


def _failed(target: Target, exc: BaseException) -> Any:
    from orchestrator.core.results import RunResult
    from orchestrator.core.secrets import redact

    text = (str(exc).strip().splitlines() or [""])[0]
    return RunResult(
        target.env,
        target.name,
        "",
        "failed",
        exit_code=1,
        message=redact(f"unexpected error: {type(exc).__name__}: {text}"),
    )


def _skipped(targets: Sequence[Target], why: str) -> list[Any]:
    """Targets left alone (after a failure, or a failed canary): named, so a re-run can tell."""
    from orchestrator.core.results import RunResult

    return [RunResult(t.env, t.name, "", "skipped", message=f"not run: {why}") for t in targets]


def fan_out(targets: Sequence[Target], work: Work, options: FleetOptions) -> list[Any]:
    """Run `work` on each target; canary first; stop or continue after a failure."""
    progress = Progress(len(targets), options.on_result)
    canary, rest = list(targets[: options.canary]), list(targets[options.canary :])
    results = _batch(canary, work, options, progress)
    if any(r.exit_code for r in results):
        progress.skip(len(rest), "canary failed")
        progress.close()
        return results + _skipped(rest, "a canary failed")
    results += _batch(rest, work, options, progress)
    progress.close()
    return results


def _batch(
    targets: list[Target], work: Work, options: FleetOptions, progress: Progress
) -> list[Any]:
    if not targets:
        return []
    if options.parallel <= 1 or len(targets) == 1:
        results = []
        for i, target in enumerate(targets):
            result = _guarded(work, target)
            results.append(result)
            progress.done(result)
            if result.exit_code and options.on_error == "stop":
                progress.skip(len(targets) - i - 1, "stopped after a failure")
                return results + _skipped(targets[i + 1 :], f"stopped after {target.name} failed")
        return results
    # imported here: a single database (most runs) never pays for a process pool
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    global _work
    _work = work
    order = {t.name: i for i, t in enumerate(targets)}
    results = []
    pending = list(targets)
    running: dict[Future[Any], Target] = {}
    stop: str | None = None
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(options.parallel, mp_context=context) as pool:
        while pending or running:
            while pending and not stop and len(running) < options.parallel:
                target = pending.pop(0)
                running[pool.submit(_run, target)] = target
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                target = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # the worker died (killed, out of memory)
                    result = _failed(target, exc)
                results.append(result)
                progress.done(result)
                if result.exit_code and options.on_error == "stop" and not stop:
                    stop = f"stopped after {target.name} failed"
        if stop and pending:
            progress.skip(len(pending), "stopped after a failure")
            results += _skipped(pending, stop)
    return sorted(results, key=lambda r: order[r.target])


class Progress:
    """Databases done of total, as each one finishes: the CLI's line for it (`on_result`),
    a `fleet.target` event off a terminal, a counter line on a terminal otherwise."""

    def __init__(self, total: int, on_result: Callable[[Any, int, int], None] | None = None):
        from orchestrator.core.logging import quiet

        self.total, self.finished, self.failed = total, 0, 0
        self.on_result = on_result
        self.tty = sys.stderr.isatty() and not quiet()
        self.log = structlog.get_logger("orchestrator")

    def done(self, result: Any) -> None:
        self.finished += 1
        self.failed += bool(result.exit_code)
        if self.on_result is not None:
            self.on_result(result, self.finished, self.total)
        if not self.tty:
            self.log.info(
                "fleet.target",
                target=result.target,
                env=result.env,
                outcome=result.outcome,
                done=self.finished,
                failed=self.failed,
                remaining=self.total - self.finished,
            )
        elif self.on_result is None:
            self._line()

    def skip(self, count: int, why: str) -> None:
        if count:
            self.log.warning("fleet.skipped", count=count, reason=why)

    def _line(self) -> None:
        sys.stderr.write(
            f"\r  databases: {self.finished}/{self.total} done, {self.failed} failed, "
            f"{self.total - self.finished} remaining "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.total and self.on_result is None:
            sys.stderr.write("\n")
