"""`--parallel N`: a parent run that supervises up to N child runs at once, one task each.

The parent is prepared like any run (branch, pre-loop hooks), fires `supervise`, then loops on
the main thread about twenty times a second:

- a child that exited is collected: its run.json (or, if it died without one, the record
  recovery writes for it) goes into the parent's ``children``, its tokens, cost and task
  counts into the parent's totals;
- successful children's branches are merged into the run branch (``git merge --no-ff``, in
  the parent's working tree) in selection order, each as soon as every child started before
  it has ended; a branch that does not merge is left as it is and its task marked `failed`
  (reason_code `merge_conflict`);
- the token, cost and time budgets are shared: the live children's status.json numbers are
  added up, and when a limit is crossed every child is interrupted and the run ends
  `exhaust_budget`; ``--budget-tasks``/``--max-iterations`` cap how many children start;
- free slots are filled with ready tasks (independent by construction: a task is ready only
  once its dependencies are closed). A task whose dependency's child is still running waits;
  one whose dependency is done but not merged yet has the pending merges done first, so it
  starts from a branch that holds its dependencies' work.

Signals: the first one interrupts the run (`supervising` → `stopping`), is forwarded to every
child's process group, and the parent waits for the children to record their own endings. A
second one kills every child's tree at once, has recovery record each child `force_killed`,
and the driver ends the parent `force_killed`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cub.errors import CubError, TaskNotFound
from cub.lifecycle.budget import exhausted_while_running
from cub.lifecycle.context import add_child_totals
from cub.lifecycle.machine import signal_word
from cub.modes.parallel.child import Child, ChildEngine, ChildSpec
from cub.modes.parallel.children import (
    BUDGET_CODES,
    LocalChildren,
    budget_left,
    child_run_id,
    shared_usage,
    start_limit,
)
from cub.modes.parallel.merge import MergeQueue, fail_merged_task
from cub.processes import kill_adopted_orphans
from cub.records.schemas import BudgetUse
from cub.tasks.selection import explain_empty, pick_task, ready_tasks

if TYPE_CHECKING:
    from cub.lifecycle.handle import Run
    from cub.lifecycle.plan import RunPlan
    from cub.lifecycle.settings import LoopSettings
    from cub.tasks.backend import TaskBackend
    from cub.tasks.model import Task

# (trigger, reason_code, reason): how the parent ends.
Ending = tuple[str, str, str]

_POLL_S = 0.05
_STATUS_EVERY_S = 1.0
# A child that has not written its status.json this long after it started is signalled anyway.
_SIGNAL_UNSTARTED_AFTER_S = 3.0


def run_parallel(run: Run, env: Mapping[str, str], engine: ChildEngine | None = None) -> None:
    """``engine`` starts the children: on this machine unless another is given (the
    swarm's services, `cub.modes.swarm`)."""
    ParallelRun(run, env, engine).execute()


class ParallelRun:
    def __init__(self, run: Run, env: Mapping[str, str], engine: ChildEngine | None = None) -> None:
        assert run.plan is not None and run.settings is not None
        assert run.plan.backend is not None and run.plan.request.parallel is not None
        assert run.ctx.store is not None
        self.run = run
        self.engine: ChildEngine = engine or LocalChildren(
            run.plan, env, run.ctx.store.run_dir / "children"
        )
        self.plan: RunPlan = run.plan
        self.settings: LoopSettings = run.settings
        self.backend: TaskBackend = run.plan.backend
        self.env = env
        self.width = run.plan.request.parallel
        self.live: list[Child] = []
        self.started: set[str] = set()
        self.merges = MergeQueue(
            run,
            self.backend,
            work_dir=run.work_dir or run.plan.project_dir,
            branch_prefix=run.plan.config.branch.prefix,
        )
        self.failed: list[str] = []
        # Totals of the children that have ended.
        self.spent = BudgetUse()
        # A shared budget ran out: stop now. / A start limit was reached: start no more.
        self.exhausted: tuple[str, str] | None = None
        self.start_limit: tuple[str, str] | None = None
        self.no_more = False
        self.stopping = False
        self.status_at = 0.0
        # A child started or ended: status.json is rewritten once at the end of the pass,
        # however many did.
        self.status_due = False
        # What moved the checkout this run started from (an isolated run: --worktree), if any.
        self.breach: str | None = None

    # -- the supervision loop -----------------------------------------------------------------

    def execute(self) -> None:
        self.run.machine.supervise()
        try:
            try:
                ending = self._supervise()
            except BaseException:
                # A second signal, or a crash: no child may outlive the parent or miss its
                # record.
                self._kill_all()
                raise
        finally:
            self.engine.close()
        self.run.end_with(*ending)

    def _supervise(self) -> Ending:
        watch = self.run.watch
        while True:
            if watch.requested:
                return self._interrupted()
            self._reap()
            self.merges.merge_in_order(self.live)
            over = self._over_budget()
            if over is not None:
                return self._exhaust(*over)
            self._start_more()
            if not self.live:
                return self._conclude()
            self._write_status()
            watch.wake.wait(_POLL_S)

    def _reap(self) -> None:
        for child in list(self.live):
            if child.ended():
                self._collect(child)

    def _collect(self, child: Child) -> None:
        ctx, machine = self.run.ctx, self.run.machine
        self.live.remove(child)
        record = child.collect(self.plan.project_dir)
        if record is None or record.recorded_by != "machine":
            # A child that died took none of its agents' escapees with it: they are ours now.
            # (One that recorded its own ending stopped its agents' trees itself first.)
            orphans = kill_adopted_orphans()
            if orphans:
                machine.note("orphans_killed", task_id=child.task_id, data={"pids": orphans})
        ctx.children.append(child.summary())
        state = child.state
        if record is not None:
            add_child_totals(ctx, self.spent, record)
        succeeded = (
            record is not None
            and state == "completed"
            and record.tasks.succeeded > 0
            and child.task_id in record.tasks.attempted
        )
        if succeeded and self._isolation_breached(child):
            # Its work may not be what it seems: nothing more is merged or taken as done.
            fail_merged_task(self.backend, child.task_id, f"isolation_breached: {self.breach}")
            ctx.tasks.succeeded -= 1
            ctx.tasks.failed += 1
            self.failed.append(child.task_id)
        elif succeeded:
            self.merges.pending.append(child)
        elif state == "completed":
            # It claimed nothing: another run took the task first, or it was closed meanwhile.
            ctx.tasks.skipped += 1
        elif state == "budget_exhausted" and record is not None:
            code = record.reason_code if record.reason_code in BUDGET_CODES else "token_budget"
            self.exhausted = self.exhausted or (code, f"{child.task_id}: {record.reason}")
        elif not (self.stopping and state == "interrupted"):
            self.failed.append(child.task_id)
            if self.settings.on_failure == "stop":
                self.no_more = True
        reason = record.reason if record is not None else "it left no record"
        machine.note(
            "child_finished",
            task_id=child.task_id,
            data={
                "run_id": child.run_id,
                "state": state,
                "exit_code": child.exit_code,
                "reason_code": record.reason_code if record is not None else None,
            },
        )
        mark = "✓" if succeeded else "✗"
        self.run.observer.message(f"{mark} {child.task_id}: child run {state} ({reason})")
        self.status_due = True

    def _isolation_breached(self, child: Child) -> bool:
        """Whether the checkout the run started from has moved (checked as each child ends)."""
        guard = self.run.checkout_guard
        if self.breach is None and guard is not None:
            moved = guard.moved()
            if moved is not None:
                self.breach = f"while {child.task_id} ran, {moved}"
                self.no_more = True
                self.run.machine.note(
                    "isolation_breached", task_id=child.task_id, data={"reason": moved}
                )
        return self.breach is not None

    # -- budgets ------------------------------------------------------------------------------

    def _over_budget(self) -> tuple[str, str] | None:
        """Add the live children's usage to the ended ones'; a shared limit crossed?"""
        ctx = self.run.ctx
        budget = ctx.budget
        total = shared_usage(self.spent, self.live)
        budget.tokens_used, budget.cost_usd = total.tokens_used, total.cost_usd
        budget.cost_incomplete = total.cost_incomplete
        if not self.run.budget_warned and self.settings.crossed_warning(budget):
            self.run.budget_warned = True
            if self.run.hooks is not None:
                self.run.hooks.fire("on-budget-warning")
        if self.exhausted is not None:
            return self.exhausted
        return exhausted_while_running(budget, ctx.elapsed(), self.settings.run_timeout)

    def _exhaust(self, code: str, reason: str) -> Ending:
        self.run.observer.message(f"budget: {reason}; stopping {len(self.live)} child run(s)")
        self._stop_children(signal.SIGINT)
        if self.run.watch.requested:
            return self._interrupted()
        self.merges.merge_all()
        return ("exhaust_budget", code, reason)

    # -- starting children --------------------------------------------------------------------

    def _ready(self) -> list[Task]:
        request = self.plan.request
        tasks = self.backend.load()
        if request.task is not None:
            try:
                task = pick_task(tasks, task_id=request.task, exclude=self.started)
            except TaskNotFound:
                return []
            return [task] if task is not None else []
        ready = ready_tasks(tasks, epic=request.epic, label=request.label)
        # A child closes its task a moment before it exits: its dependents wait until it has
        # been collected (and its branch merged), so they start from a branch with its work.
        running = {c.task_id for c in self.live}
        return [
            t for t in ready if t.id not in self.started and not running.intersection(t.depends_on)
        ]

    def _start_more(self) -> None:
        if self.no_more or self.run.watch.requested or len(self.live) >= self.width:
            return
        ready = self._ready()
        free = self.width - len(self.live)
        waiting_on = self.merges.task_ids()
        if any(dep in waiting_on for task in ready[:free] for dep in task.depends_on):
            # Those tasks build on work not merged yet: merge it first, then look again (a
            # dependency whose branch did not merge is failed now, and its dependents wait).
            self.merges.merge_all()
            ready = self._ready()
        for task in ready[:free]:
            limit = start_limit(self.run.ctx.budget, len(self.started))
            if limit is not None:
                self.start_limit, self.no_more = limit, True
                return
            self._start(task)

    def _start(self, task: Task) -> None:
        ctx = self.run.ctx
        self.started.add(task.id)
        run_id = child_run_id(ctx.run_id, task.id)
        try:
            child = self.engine.start(
                ChildSpec(
                    task_id=task.id,
                    run_id=run_id,
                    parent_id=ctx.run_id,
                    run_branch=ctx.branch,
                    order=len(self.started),
                    limits=budget_left(ctx.budget, ctx.elapsed(), self.settings.run_timeout),
                )
            )
        except CubError as exc:
            # It never ran (the engine said why, and gave its task back): a failed task.
            self.failed.append(task.id)
            self.no_more = self.no_more or self.settings.on_failure == "stop"
            self.run.machine.note("child_not_started", task_id=task.id, data={"error": str(exc)})
            self.run.observer.message(f"✗ {task.id}: {exc}")
            return
        self.live.append(child)
        ctx.budget.tasks_used = len(self.started)
        self.run.machine.note(
            "child_started", task_id=task.id, data={"run_id": run_id, **child.where()}
        )
        self.run.observer.message(f"▶ {task.id}: {task.title} (child run {run_id})")
        self.status_due = True

    # -- stopping children --------------------------------------------------------------------

    def _interrupted(self) -> Ending:
        signum = self.run.watch.first or signal.SIGINT
        word = signal_word(signum) or "sigint"
        if self.run.machine.state != "stopping":
            self.run.machine.interrupt(signal=signum)
        count = len(self.live)
        forward = signal.SIGTERM if signum in (signal.SIGTERM, signal.SIGHUP) else signal.SIGINT
        if count:
            self.run.observer.message(
                f"interrupt: stopping {count} child run(s) "
                f"(grace {self.settings.grace:g}s; interrupt again to kill them now)"
            )
        if not self._stop_children(forward):
            return (
                "force_kill",
                "grace_expired",
                "child runs did not stop within their grace period and were killed",
            )
        # What finished before the stop is kept: a closed task's work is on the run branch.
        self.merges.merge_all()
        stopped = f"; {count} child run(s) interrupted" if count else ""
        return ("stopped", word, f"stopped on {word.upper()}{stopped}")

    def _stop_children(self, sig: int) -> bool:
        """Signal every child's process group and wait for each to record its ending. False if
        some had to be killed because they outlived the grace period."""
        self.stopping = self.no_more = True
        if not self.live:
            return True
        self.run.machine.note(
            "children_signalled",
            data={"signal": signal.Signals(sig).name, "run_ids": [c.run_id for c in self.live]},
        )
        settings = self.settings
        margin = self.engine.stop_margin
        deadline = time.monotonic() + settings.grace + settings.kill_after + margin
        while self.live:
            now = time.monotonic()
            for child in self.live:
                late = now - child.started_at > _SIGNAL_UNSTARTED_AFTER_S
                if not child.signalled and (child.has_started() or late):
                    child.signal_group(sig)
                    child.signalled = True
            self._reap()
            if not self.live:
                break
            if now > deadline:
                self._kill_all()
                return False
            self._write_status()
            time.sleep(0.05)
        self._write_status(force=True)
        return True

    def _kill_all(self) -> None:
        """Kill every child's tree at once, then give each its record (recovery writes a
        `force_killed` one for a child killed before it could)."""
        self.stopping = self.no_more = True
        for child in self.live:
            try:
                child.kill()
            except Exception as exc:  # the others must still be killed
                self.run.machine.note("child_kill_failed", data={"error": str(exc)})
        for child in list(self.live):
            try:
                self._collect(child)
            except Exception as exc:
                self.live.remove(child)
                self.run.machine.note("child_record_failed", data={"error": str(exc)})

    # -- the ending ---------------------------------------------------------------------------

    def _conclude(self) -> Ending:
        if self.breach is not None:
            # Only what was done before the checkout moved is merged.
            self.merges.merge_all()
            return ("children_failed", "isolation_breached", self.breach)
        self.merges.merge_all()
        if self.start_limit is not None and self._ready():
            return ("exhaust_budget", *self.start_limit)
        conflicts, branch = self.merges.conflicts, self.run.ctx.branch
        if self.failed:
            unmerged = f"; {len(conflicts)} branch(es) did not merge" if conflicts else ""
            return (
                "children_failed",
                "tasks_failed",
                f"{len(self.failed)} child run(s) failed: {', '.join(self.failed)}{unmerged}",
            )
        if conflicts:
            return (
                "children_failed",
                "merge_conflict",
                f"{len(conflicts)} task branch(es) did not merge into {branch} "
                f"and were marked failed: {', '.join(conflicts)}",
            )
        request = self.plan.request
        code, sentence = explain_empty(self.backend.load(), epic=request.epic, label=request.label)
        if self.merges.merged:
            code = "all_tasks_done"
            sentence = f"{len(self.merges.merged)} task(s) done and merged; {sentence}"
        elif code != "all_tasks_done":
            code = "no_ready_tasks"
        return ("children_done", code, sentence)

    def _write_status(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or self.status_due or now - self.status_at >= _STATUS_EVERY_S:
            self.status_at, self.status_due = now, False
            self.run.machine.write_status()
