"""The loop's knobs, resolved once from the effective config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cub.hooks.scripts import ENV_RUN_ID, ENV_TASK_ID, ENV_TASK_TITLE
from cub.lifecycle.budget import fraction_used
from cub.records.schemas import BudgetUse

if TYPE_CHECKING:
    from cub.config.schema import Config
    from cub.tasks.model import Task


@dataclass(frozen=True)
class LoopSettings:
    on_failure: str
    max_attempts: int
    verify: tuple[str, ...]
    verify_timeout: float
    on_interrupt: str
    grace: float
    task_timeout: float | None
    idle_timeout: float | None
    run_timeout: float | None
    circuit_breaker: bool
    model: str | None
    # --model beats a task's `model:X` label, which beats config harness.model.
    flag_model: str | None
    warn_at: float
    hooks_enabled: bool
    hooks_fail_fast: bool
    hook_timeout: float
    agent_set_env: Mapping[str, str]
    agent_pass_env: tuple[str, ...]
    # After an agent reports its final result, how long it may take to exit by itself.
    exit_after_result: float = 5.0
    # SIGTERM → SIGKILL step of the circuit breaker.
    kill_after: float = 2.0
    # harness.log's cap in bytes (config loop.log_max_bytes).
    log_max_bytes: int | None = None

    @classmethod
    def from_config(cls, config: Config, flag_model: str | None = None) -> LoopSettings:
        loop = config.loop
        return cls(
            on_failure=loop.on_failure,
            max_attempts=loop.max_attempts,
            verify=tuple(loop.verify),
            verify_timeout=loop.verify_timeout,
            on_interrupt=loop.on_interrupt,
            grace=loop.grace,
            task_timeout=loop.task_timeout,
            idle_timeout=loop.idle_timeout,
            run_timeout=loop.timeout,
            circuit_breaker=loop.circuit_breaker,
            model=config.harness.model,
            flag_model=flag_model,
            warn_at=config.budget.warn_at,
            hooks_enabled=config.hooks.enabled,
            hooks_fail_fast=config.hooks.fail_fast,
            hook_timeout=config.hooks.timeout,
            agent_set_env=dict(config.harness.env),
            agent_pass_env=tuple(config.harness.pass_env),
            log_max_bytes=loop.log_max_bytes,
        )

    def agent_env(self, base: Mapping[str, str], *, run_id: str, task: Task) -> dict[str, str]:
        """The agent's environment: the caller's (or only the allow-listed part of it), the
        configured additions, and cub's own variables."""
        if self.agent_pass_env:
            env = {
                k: base[k]
                for k in ("PATH", "HOME", "LANG", "TERM", *self.agent_pass_env)
                if k in base
            }
        else:
            env = dict(base)
        env.update(self.agent_set_env)
        env.update({ENV_RUN_ID: run_id, ENV_TASK_ID: task.id, ENV_TASK_TITLE: task.title})
        return env

    def model_for(self, task: Task) -> str | None:
        if self.flag_model:
            return self.flag_model
        for label in task.labels:
            if label.startswith("model:") and label[6:]:
                return label[6:]
        return self.model

    def crossed_warning(self, budget: BudgetUse) -> bool:
        return fraction_used(budget) >= self.warn_at
