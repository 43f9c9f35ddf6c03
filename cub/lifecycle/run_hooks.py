"""Hooks as a run sees them: fired with the run's environment, journaled in events.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cub.hooks.scripts import hook_env, run_hooks

if TYPE_CHECKING:
    from cub.hooks.scripts import HookRunResult
    from cub.lifecycle.machine import RunMachine
    from cub.lifecycle.signals import InterruptWatch
    from cub.tasks.model import Task


# The hooks an orderly stop runs: a first Ctrl+C does not cut them short (a second one does).
_ALWAYS_RUN = frozenset({"post-task", "post-loop"})


class RunHooks:
    def __init__(
        self,
        machine: RunMachine,
        watch: InterruptWatch,
        *,
        enabled: bool,
        timeout: float,
        work_dir: Path,
    ) -> None:
        self.machine = machine
        self.watch = watch
        self.enabled = enabled
        self.timeout = timeout
        self.work_dir = work_dir

    def fire(
        self,
        point: str,
        *,
        task: Task | None = None,
        outcome: str | None = None,
        exit_code: int | None = None,
        run_state: str | None = None,
        stop_on_failure: bool = False,
    ) -> HookRunResult | None:
        if not self.enabled:
            return None

        ctx = self.machine.ctx
        store = ctx.store
        project_dir = ctx.project_dir or self.work_dir
        env = hook_env(
            run_id=ctx.run_id,
            run_dir=store.run_dir if store else project_dir,
            project_dir=project_dir,
            harness=ctx.harness.name if ctx.harness else "",
            task_id=task.id if task else None,
            task_title=task.title if task else None,
            outcome=outcome,
            exit_code=exit_code,
            run_state=run_state,
        )
        result = run_hooks(
            point,
            project_dir=project_dir,
            env=env,
            timeout=self.timeout,
            cwd=self.work_dir,
            log_dir=store.run_dir if store else None,
            redact=store.redact if store else (lambda s: s),
            stop_on_failure=stop_on_failure,
            # Hooks before work stop at the first Ctrl+C; those of the orderly stop run on.
            interrupted=None if point in _ALWAYS_RUN else (lambda: self.watch.requested),
        )
        if result.outcomes:
            self.machine.note(
                "hook",
                task_id=task.id if task else None,
                data={
                    "point": point,
                    "hooks": [
                        {
                            "path": str(o.path),
                            "exit_code": o.exit_code,
                            "timed_out": o.timed_out,
                            "duration_s": o.duration_s,
                        }
                        for o in result.outcomes
                    ],
                },
            )
        return result
