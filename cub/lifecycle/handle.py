"""The handle of a run in progress: what the loop and the modes work through and end a run by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cub.lifecycle.context import RunContext
from cub.lifecycle.machine import RunMachine
from cub.lifecycle.observer import RunObserver
from cub.lifecycle.signals import InterruptWatch

if TYPE_CHECKING:
    from cub.agents.harness import Harness
    from cub.lifecycle.plan import RunPlan
    from cub.lifecycle.run_hooks import RunHooks
    from cub.lifecycle.settings import LoopSettings
    from cub.tasks.model import Task
    from cub.tasks.plan import Plan
    from cub.workspace.isolation import CheckoutGuard


@dataclass
class Run:
    """A run in progress: the machine, its context, and what validation produced."""

    machine: RunMachine
    watch: InterruptWatch
    observer: RunObserver
    plan: RunPlan | None = None
    result_ready: list[Task] | None = None
    result_plan: Plan | None = None
    hooks: RunHooks | None = None
    harness: Harness | None = None
    settings: LoopSettings | None = None
    # Where the agent works: the project, or the run's worktree.
    work_dir: Path | None = None
    # An isolated run's watch over the checkout it started from (cub.workspace.isolation).
    checkout_guard: CheckoutGuard | None = None
    budget_warned: bool = False
    # The run's harness model has been set from what an agent reported (cub.loop.attempt).
    model_reported: bool = False
    # Where the branch this run created started (None when it reused one): a branch still
    # there at the end holds no work and is deleted (cub.workspace.worktree).
    branch_base: str | None = None

    # Called just before the run enters its terminal state through `end_with` (a worktree to
    # remove, an issue to comment on): (run, terminal state, reason_code, reason).
    finishers: list[Callable[[Run, str, str, str], None]] = field(default_factory=list)

    @property
    def ctx(self) -> RunContext:
        return self.machine.ctx

    def end_with(self, trigger: str, reason_code: str, reason: str) -> None:
        """End the run in order: post-loop hooks and the mode's finishers see the terminal state
        about to be entered; then the trigger enters it and the record is written."""
        machine = self.machine
        dest = machine.edge(trigger).dest
        if self.hooks is not None:
            self.hooks.fire("post-loop", run_state=dest)
        for finish in self.finishers:
            try:
                finish(self, dest, reason_code, reason)
            except Exception as exc:  # the run's own ending matters more than a finisher's
                machine.note("finisher_failed", data={"error": f"{type(exc).__name__}: {exc}"})
        getattr(machine, trigger)(reason=reason, reason_code=reason_code)
