"""The task loop: claim the next ready task, run an attempt, settle it, until the run ends.

Each pass ends in exactly one machine trigger. Endings go through `Run.end_with`, which runs
the post-loop hooks (they see the state the run is about to enter) and then fires the trigger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from cub.errors import TaskFileError, TaskNotFound
from cub.lifecycle.budget import exhausted_before_task
from cub.lifecycle.machine import signal_word
from cub.lifecycle.signals import StopRequested
from cub.loop.attempt import AttemptResult, run_attempt
from cub.loop.verify import run_verify
from cub.records.schemas import ErrorInfo
from cub.tasks import changes
from cub.tasks.selection import explain_empty, ready_tasks
from cub.workspace.branches import HeadTracker

if TYPE_CHECKING:
    from cub.agents.harness import Harness
    from cub.lifecycle.handle import Run
    from cub.lifecycle.plan import RunPlan
    from cub.lifecycle.settings import LoopSettings
    from cub.records.schemas import TaskAttempt
    from cub.tasks.backend import TaskBackend
    from cub.tasks.model import Task
    from cub.workspace.branches import HeadTracker

# (trigger, reason_code, reason): how the loop decided to end.
Ending = tuple[str, str, str]


def run_loop(run: Run) -> None:
    assert run.plan is not None and run.harness is not None and run.settings is not None
    TaskLoop(run, run.harness, run.settings).execute()


@dataclass
class TaskLoop:
    run: Run
    harness: Harness
    settings: LoopSettings
    # Tasks this run will not pick again (stuck, or failed under `continue`).
    skip: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    attempts_run: int = 0
    # HEAD at each task's start, to record the commits it added (None outside git).
    _head: HeadTracker | None = None

    @property
    def plan(self) -> RunPlan:
        assert self.run.plan is not None
        return self.run.plan

    @property
    def backend(self) -> TaskBackend:
        assert self.plan.backend is not None
        return self.plan.backend

    def execute(self) -> None:
        try:
            try:
                while True:
                    self.run.watch.checkpoint()
                    ending = self._pass()
                    if self.run.machine.is_terminal:
                        return  # the pass ended the run itself (a fail-fast pre-task hook)
                    if ending is not None:
                        self.run.end_with(*ending)
                        return
            except StopRequested as stop:
                self._stop(stop.signum)
            except (TaskFileError, TaskNotFound) as exc:
                self._backlog_changed(exc)
        except BaseException:
            # A forced kill or a crash, also one that cut the orderly stop short: give back
            # what this run holds before the driver records the ending.
            self._release_all("the run ended before this task finished")
            raise

    # -- one pass: select, attempt, settle --------------------------------------------------

    def _pass(self) -> Ending | None:
        run, ctx = self.run, self.run.ctx
        budget = exhausted_before_task(ctx.budget, ctx.elapsed(), self.settings.run_timeout)
        if budget is not None:
            return ("exhaust_budget", *budget)
        request = self.plan.request
        if request.once and self.attempts_run:
            return ("finish", "once_done", "--once: one task done")
        task = self.backend.claim_next(
            ctx.run_id,
            epic=request.epic,
            label=request.label,
            task_id=request.task,
            exclude=self.skip,
        )
        if task is None:
            return self._nothing_left()
        ctx.claimed_tasks.append(task.id)
        if task.id not in ctx.tasks.attempted:
            ctx.tasks.attempted.append(task.id)
            ctx.tasks.selected += 1
            ctx.budget.tasks_used += 1
        # The claim is journaled by the transition (its data: task id and attempt), and the
        # status.json it writes lists the claim for recovery.
        run.machine.start_task(task_id=task.id, attempt=task.attempts)
        return self._attempt(task)

    def _attempt(self, task: Task) -> Ending | None:
        run, ctx = self.run, self.run.ctx
        hooks = run.hooks
        pre = (
            hooks.fire("pre-task", task=task, stop_on_failure=self.settings.hooks_fail_fast)
            if hooks
            else None
        )
        if run.watch.requested:  # interrupted while the pre-task hooks ran: the agent never started
            self._release(task, "interrupted before the agent started", uncount=True)
            raise StopRequested(run.watch.first or 2)
        if pre is not None and pre.failed and self.settings.hooks_fail_fast:
            self._release(task, "a pre-task hook failed", uncount=True)
            failure = pre.first_failure
            assert failure is not None
            run.end_with(
                "hook_failed",
                "hook_failed",
                f"pre-task hook {failure.name} failed for {task.id} and hooks.fail_fast is set",
            )
            return None
        if self._head is None and self.plan.git_root:
            self._head = HeadTracker(self._work_dir())
        if self._head is not None:
            self._head.start()
        # What the prompt shows of the backlog: the task's epic, if it has one.
        backlog = self.backend.epic_tasks(task.parent) if task.parent else [task]
        result = run_attempt(
            run, task, task.attempts, self.harness, self.settings, self._work_dir(), backlog
        )
        self.attempts_run += 1
        ctx.budget.iterations += 1
        if result.stopped_by == "interrupt":
            if result.record.outcome == "succeeded":
                self._settle_while_stopping(task, result)  # it finished within the grace
            else:
                self._settle_interrupted(task, result)
            raise StopRequested(run.watch.first or 2)
        if run.machine.state == "stopping":
            # `loop.on_interrupt: finish`: the attempt ended by itself after the interrupt.
            self._settle_while_stopping(task, result)
            raise StopRequested(run.watch.first or 2)
        run.machine.attempt_ended(outcome=result.record.outcome)
        return self._settle(task, result)

    def _settle(self, task: Task, result: AttemptResult) -> Ending | None:
        run, ctx, record = self.run, self.run.ctx, result.record
        breach = run.checkout_guard.moved() if run.checkout_guard is not None else None
        if breach is not None:
            return self._breached(task, record, breach)
        if record.outcome == "succeeded" and self.settings.verify:
            record = self._verify(task, record)
        if result.stopped_by not in (None, "timed_out"):
            if record.outcome == "succeeded":
                # Stopped for the budget, it finished its task first: that work is kept.
                self._close_outside_the_loop(task)
            else:
                # Cut short: the task goes back to the backlog untouched, and the attempt cub
                # cut short is not one of the task's own.
                self._release(task, "the run's budget ran out during this attempt", uncount=True)
                ctx.tasks.interrupted += 1
            self._post_task(task, record)
            return ("exhaust_budget", result.stopped_by, result.stopped_reason or "")
        self._post_task(task, record)
        ctx.current_task = None
        if record.outcome == "succeeded":
            commits = self._close(task)
            run.machine.task_succeeded(task_id=task.id, commits=commits)
            if result.promise_complete:
                left = self._anything_left()
                # Recorded either way: the agent's claim, and whether the backlog agreed.
                run.machine.note("promise_complete", task_id=task.id, data={"tasks_left": left})
                if not left:
                    return (
                        "finish",
                        "promise_complete",
                        "the agent reported the backlog complete, and nothing is left",
                    )
            return None
        return self._after_failure(task, record)

    def _after_failure(self, task: Task, record: TaskAttempt) -> Ending | None:
        run, ctx, settings, outcome = self.run, self.run.ctx, self.settings, record.outcome
        if run.hooks is not None:
            run.hooks.fire("on-error", task=task, outcome=outcome, exit_code=record.exit_code)
        if outcome == "stuck":
            reason = record.stuck_reason or "no reason given"
            self.backend.release(task.id, ctx.run_id, note=f"stuck: {reason}")
            ctx.claimed_tasks.remove(task.id)  # once handed back (the file may not parse)
            ctx.tasks.failed += 1
            self.failures.append(task.id)
            self.skip.add(task.id)
            if settings.on_failure == "stop" or self.plan.request.once:
                return (
                    "stop_on_failure",
                    "agent_stuck",
                    f"the agent is stuck on {task.id}: {reason}",
                )
            run.machine.continue_loop()
            return None
        exhausted = task.attempts >= settings.max_attempts
        note = f"attempt {task.attempts} {outcome}"
        if exhausted:
            self.backend.mark_failed(task.id, ctx.run_id, reason=f"{note}; attempts exhausted")
        else:
            self.backend.mark_retry(task.id, ctx.run_id, note=note)
        ctx.claimed_tasks.remove(task.id)
        failed_for_good = exhausted or settings.on_failure != "retry"
        if failed_for_good:
            ctx.tasks.failed += 1
            self.failures.append(task.id)
            self.skip.add(task.id)
        if settings.on_failure == "retry" and exhausted:
            return (
                "stop_on_failure",
                "retries_exhausted",
                f"{task.id} failed {task.attempts} time(s) and has no attempts left",
            )
        if settings.on_failure == "stop" or self.plan.request.once:
            verify_failed = record.error is not None and record.error.type == "VerifyFailed"
            code = "verify_failed" if verify_failed else "task_failed"
            return ("stop_on_failure", code, f"{task.id} {outcome} (attempt {task.attempts})")
        run.machine.continue_loop()
        return None

    def _breached(self, task: Task, record: TaskAttempt, breach: str) -> Ending:
        """The agent moved the checkout the run promised to leave alone: whatever it did, the
        attempt failed, the task goes back to the backlog, and the run stops."""
        ctx = self.run.ctx
        record = msgspec.structs.replace(
            record, outcome="failed", error=ErrorInfo(type="IsolationBreached", message=breach)
        )
        assert ctx.store is not None
        ctx.store.write_attempt(record)
        self._release(task, f"attempt {task.attempts}: {breach}")
        ctx.tasks.failed += 1
        self.failures.append(task.id)
        self._post_task(task, record)
        return ("stop_on_failure", "isolation_breached", f"{task.id}: {breach}")

    # -- endings ------------------------------------------------------------------------------

    def _nothing_left(self) -> Ending:
        request = self.plan.request
        tasks = self.backend.load()
        if request.task is not None:
            target = next((t for t in tasks if t.id == request.task), None)
            if target is not None and target.status == "closed":
                return ("finish", "task_done", f"task {target.id} is closed")
            if target is not None and target.id in self.failures:
                return ("finish_failed", "tasks_failed", f"task {target.id} failed")
        if self.failures:
            return (
                "finish_failed",
                "tasks_failed",
                f"nothing left to run; {len(self.failures)} task(s) failed: "
                f"{', '.join(self.failures)}",
            )
        code, sentence = explain_empty(tasks, epic=request.epic, label=request.label)
        return ("finish", code, sentence)

    def _anything_left(self) -> bool:
        request = self.plan.request
        return bool(ready_tasks(self.backend.load(), epic=request.epic, label=request.label))

    def _stop(self, signum: int) -> None:
        """The orderly stop after a first signal: nothing runs any more; hooks, then record."""
        machine = self.run.machine
        if machine.state != "stopping":
            machine.interrupt(signal=signum)
        self._release_all("the run was interrupted")
        word = signal_word(signum) or "sigint"
        self.run.end_with("stopped", word, f"stopped on {word.upper()}")

    def _backlog_changed(self, exc: TaskFileError | TaskNotFound) -> None:
        """The backlog was validated when the run started: if it no longer parses, or a claimed
        task is gone from it, someone (the agent, most likely) changed it under the run. That
        ends the run `failed` with ``task_file_changed``, not as a cub bug. cub never rewrites
        a task file it cannot parse (whatever is in it may be worth keeping), so a claim it
        cannot hand back stays marked with this run's id; recovery settles it once the file
        parses again (`settle_stranded_claims`), and `cub tasks release` is there for a person."""
        run = self.run
        if run.machine.state == "stopping":
            # Stopping anyway: the stop's own ending, with whatever could be released.
            self._stop(run.watch.first or 2)
            return
        self._release_all("the task file changed under the run")
        left = f"; still marked claimed: {', '.join(self.run.ctx.claimed_tasks)}"
        run.end_with(
            "backlog_changed",
            "task_file_changed",
            f"the task file changed under the run: {exc}"
            + (left if self.run.ctx.claimed_tasks else ""),
        )

    # -- task bookkeeping ---------------------------------------------------------------------

    def _settle_interrupted(self, task: Task, result: AttemptResult) -> None:
        # An attempt cub stopped says nothing about the task: it does not use up an attempt.
        self._release(task, "interrupted; released for the next run", uncount=True)
        self.run.ctx.tasks.interrupted += 1
        self._post_task(task, result.record)

    def _settle_while_stopping(self, task: Task, result: AttemptResult) -> None:
        """Keep a finished attempt's work; anything else goes back to the backlog."""
        record = result.record
        if record.outcome == "succeeded":
            self._close_outside_the_loop(task)
        else:
            # Failed by itself, it counts; cut short by the stop, it does not.
            cut_short = record.outcome in ("interrupted", "killed")
            note = f"attempt {task.attempts} {record.outcome} while the run stopped"
            self._release(task, note, uncount=cut_short)
            self.run.ctx.tasks.interrupted += 1
        self._post_task(task, record)

    def _post_task(self, task: Task, record: TaskAttempt) -> None:
        if self.run.hooks is not None:
            self.run.hooks.fire(
                "post-task", task=task, outcome=record.outcome, exit_code=record.exit_code
            )

    def _close(self, task: Task) -> str | None:
        """Close the task with its commit range; returns the range."""
        ctx = self.run.ctx
        commits = self._head.commits() if self._head is not None else None
        reason = f"done in cub run {ctx.run_id}" + (f"; commits {commits}" if commits else "")
        self.backend.close(task.id, ctx.run_id, reason=reason)
        ctx.claimed_tasks.remove(task.id)
        ctx.tasks.succeeded += 1
        return commits

    def _close_outside_the_loop(self, task: Task) -> None:
        """Close a finished task while the run is ending (budget, stop): journaled as an
        event, the machine being past the transition that records a success."""
        commits = self._close(task)
        self.run.ctx.current_task = None  # done: the record must not show it running
        self.run.machine.note("task_closed", task_id=task.id, data={"commits": commits})

    def _release(self, task: Task, note: str, uncount: bool = False) -> None:
        ctx = self.run.ctx
        self.backend.release(task.id, ctx.run_id, note=note, uncount=uncount)
        if task.id in ctx.claimed_tasks:
            ctx.claimed_tasks.remove(task.id)
        ctx.current_task = None

    def _release_all(self, note: str) -> None:
        ctx = self.run.ctx
        try:
            # Also a claim the run never got to note down: a kill can land between the task
            # file's rewrite and the claim's return.
            held = [t.id for t in self.backend.load() if changes.owned_by(t, ctx.run_id)]
        except Exception:
            held = []
        for task_id in dict.fromkeys([*ctx.claimed_tasks, *held]):
            try:
                # Killed with the run (or never started): not an attempt of the task's own.
                self.backend.release(task_id, ctx.run_id, note=note, uncount=True)
            except TaskNotFound:
                pass  # gone from the backlog (or the backlog is gone): nothing to hand back
            except Exception:  # recovery releases it later; the ending must still be recorded
                continue
            if task_id in ctx.claimed_tasks:
                ctx.claimed_tasks.remove(task_id)
        ctx.current_task = None

    def _verify(self, task: Task, record: TaskAttempt) -> TaskAttempt:
        store = self.run.ctx.store
        assert store is not None
        failure = run_verify(
            self.settings.verify,
            self._work_dir(),
            store.task_dir(task.id) / "verify.log",
            timeout=self.settings.verify_timeout,
            redact=store.redact,
        )
        if failure is None:
            return record
        record = msgspec.structs.replace(
            record, outcome="failed", error=ErrorInfo(type="VerifyFailed", message=failure)
        )
        store.write_attempt(record)
        return record

    def _work_dir(self) -> Path:
        return self.run.work_dir or self.plan.project_dir
