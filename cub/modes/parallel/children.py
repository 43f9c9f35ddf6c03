"""The child runs of a parallel run: starting, watching, stopping and accounting for them.

Each child is a separate `cub run --task ID --worktree` process: a full run with its own
records under the same project's ``.cub/runs/<child_run_id>/``, its own worktree and branch
(``<prefix><child_run_id>``, unique per parent), claiming its task through the backlog lock
like any other run. It leads its own session, so a Ctrl+C in the terminal reaches only the
parent, which forwards it; and it gets SIGTERM if the parent dies without stopping it. It is
forked from a helper that has cub imported already (`forkserver`), not executed anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cub.chart.definition import RUN_CHART
from cub.modes.parallel.child import child_summary
from cub.modes.parallel.forkserver import ForkServer
from cub.processes import kill_process_tree
from cub.records.durable import make_private_dir
from cub.records.location import runs_dir
from cub.records.reader import read_run_json, read_status_json
from cub.records.schemas import BudgetUse, ChildRun, RunRecord
from cub.recovery.runs import recover_run

if TYPE_CHECKING:
    from cub.lifecycle.plan import RunPlan
    from cub.modes.parallel.child import Child, ChildSpec


# A child that left no record at all (it died before it could write one): its state, by the
# exit code it ended with.
_STATE_BY_EXIT = {
    0: "completed",
    1: "failed",
    2: "validation_rejected",
    3: "budget_exhausted",
    130: "interrupted",
    143: "interrupted",
    137: "force_killed",
}
_MAX_RUN_ID = 128


def child_run_id(parent_id: str, task_id: str) -> str:
    """``<parent_id>-<task_id>``, shortened with a digest if that is too long for a run id."""
    name = f"{parent_id}-{task_id}"
    if len(name) <= _MAX_RUN_ID:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    return f"{parent_id[: _MAX_RUN_ID - 13]}-{digest}"


def child_args(
    plan: RunPlan,
    *,
    task_id: str,
    run_id: str,
    parent_id: str,
    run_branch: str | None,
    limits: list[str],
) -> list[str]:
    """The child's command line, after `cub`: one task, in a worktree branched from the run
    branch, with the parent's harness and per-task flags; ``limits`` are what is left of
    shared budgets."""
    argv = ["run", "--task", task_id, "--worktree"]
    argv += ["--name", run_id, "--parent-run-id", parent_id]
    if run_branch:
        argv += ["--from-branch", run_branch]
    if plan.request.worktree_keep:
        argv.append("--worktree-keep")
    return argv + child_flags(plan) + limits


def child_flags(plan: RunPlan) -> list[str]:
    """What every child of the run is given of the parent's command line and config: the
    harness, and the per-task flags."""
    request, config = plan.request, plan.config
    flags: list[str] = []
    harness = plan.harness.name if plan.harness is not None else config.harness.name
    if harness is not None:
        flags += ["--harness", harness]
        if harness == "command" and config.harness.command:
            flags += ["--harness-cmd", config.harness.command]
    for flag, value in (
        ("--model", request.model),
        ("--task-timeout", request.task_timeout),
        ("--idle-timeout", request.idle_timeout),
        ("--grace", request.grace),
        ("--on-failure", request.on_failure),
    ):
        if value is not None:
            flags += [flag, value]
    for flag, given in (
        ("--no-hooks", request.no_hooks),
        ("--no-circuit-breaker", request.no_circuit_breaker),
        ("--stream", request.stream),
        ("--verbose", request.verbose),
    ):
        if given:
            flags.append(flag)
    return flags


def budget_left(budget: BudgetUse, elapsed: float, run_timeout: float | None) -> list[str]:
    """Flags that give a new child what is left of the run's token, cost and time budgets."""
    flags: list[str] = []
    if budget.tokens_limit is not None:
        flags += ["--budget-tokens", str(max(1, budget.tokens_limit - budget.tokens_used))]
    if budget.cost_limit is not None:
        spent = budget.cost_usd or 0.0
        flags += ["--budget", repr(max(0.0, budget.cost_limit - spent))]
    if run_timeout is not None:
        flags += ["--timeout", f"{max(1.0, run_timeout - elapsed):.3f}"]
    return flags


class ChildHandle(Protocol):
    """The process of a child run: what the parent needs of it (`forkserver.ForkedProcess`)."""

    pid: int
    create_time: float | None

    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class ChildProcess:
    task_id: str
    run_id: str
    # Selection order: branches are merged in this order.
    order: int
    run_dir: Path
    proc: ChildHandle
    started_at: float
    signalled: bool = False
    record: RunRecord | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def where(self) -> dict[str, object]:
        """Where it runs, for the journal's `child_started`."""
        return {"pid": self.proc.pid}

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def has_started(self) -> bool:
        """Its status.json exists: it has installed its signal handlers and can be stopped in
        order (before that, a SIGINT would end it before it has a record)."""
        return (self.run_dir / "status.json").exists()

    def live_budget(self) -> BudgetUse | None:
        status = read_status_json(self.run_dir)
        return status.budget if status is not None else None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the child and everything under it (its agent's tree) at once, then reap."""
        if self.proc.poll() is None:
            kill_process_tree(self.proc.pid, self.proc.create_time)
            self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2.0)

    def collect(self, project_dir: Path) -> RunRecord | None:
        """After it exited: its run.json, written by itself, or by recovery if it died
        without one (which also releases its task and kills what its agent left)."""
        record = read_run_json(self.run_dir)
        if record is None and self.run_dir.is_dir():
            recover_run(project_dir, self.run_dir)
            record = read_run_json(self.run_dir)
        self.record = record
        return record

    @property
    def exit_code(self) -> int | None:
        """The process's exit code, shell style: 128+N when killed by signal N."""
        code = self.proc.returncode
        return None if code is None else (code if code >= 0 else 128 - code)

    @property
    def state(self) -> str:
        if self.record is not None:
            return self.record.state
        code = self.exit_code
        return "failed" if code is None else _STATE_BY_EXIT.get(code, "failed")

    def summary(self) -> ChildRun:
        return child_summary(self)


class LocalChildren:
    """The engine of a plain `--parallel` run: each child a `cub run` process on this machine,
    in a worktree of its own, forked by the run's helper (started with the first child)."""

    # How long a stopping child gets beyond its grace and SIGTERM→SIGKILL step: its records,
    # post-loop hooks and worktree removal.
    stop_margin = 5.0

    def __init__(self, plan: RunPlan, env: Mapping[str, str], log_dir: Path) -> None:
        self.plan = plan
        self.env = env
        self.log_dir = log_dir
        # The helper that forks the children; a new one if it died (the last is current).
        self._servers: list[ForkServer] = []

    def start(self, spec: ChildSpec) -> ChildProcess:
        args = child_args(
            self.plan,
            task_id=spec.task_id,
            run_id=spec.run_id,
            parent_id=spec.parent_id,
            run_branch=spec.run_branch,
            limits=spec.limits,
        )
        project_dir = self.plan.project_dir
        make_private_dir(self.log_dir)
        if not self._servers or not self._servers[-1].alive():
            self._servers.append(ForkServer(project_dir, self.env))
        proc = self._servers[-1].start(args, project_dir, self.log_dir / f"{spec.run_id}.log")
        return ChildProcess(
            task_id=spec.task_id,
            run_id=spec.run_id,
            order=spec.order,
            run_dir=runs_dir(project_dir) / spec.run_id,
            proc=proc,
            started_at=time.monotonic(),
        )

    def close(self) -> None:
        """Every child has been collected: the helpers can go."""
        for server in self._servers:
            server.close()
        self._servers.clear()


# -- accounting -------------------------------------------------------------------------------

BUDGET_CODES = next(
    e.reason_codes
    for e in RUN_CHART.edges
    if e.trigger == "exhaust_budget" and e.source == "supervising"
)


def shared_usage(spent: BudgetUse, live: Sequence[Child]) -> BudgetUse:
    """Tokens and cost of the whole run: the ended children's plus the live ones' so far."""
    total = BudgetUse()
    total.add(spent)
    for child in live:
        budget = child.live_budget()
        if budget is not None:
            total.add(budget)
    return total


def start_limit(budget: BudgetUse, started: int) -> tuple[str, str] | None:
    """--budget-tasks and --max-iterations cap how many children start (one task each)."""
    if budget.tasks_limit is not None and started >= budget.tasks_limit:
        return "task_budget", f"task budget exhausted: {started} task(s) started"
    used = max(started, budget.iterations)
    if budget.iterations_limit is not None and used >= budget.iterations_limit:
        return "iteration_budget", (
            f"iteration limit reached: {used} of {budget.iterations_limit} agent invocations"
        )
    return None
