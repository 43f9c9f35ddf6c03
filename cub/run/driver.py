"""`execute_run`: one `cub run` invocation, from parsed options to a terminal record.

Every way out of here is a terminal state of the machine: rejection, setup failure, the loop's
own endings, an interrupt, a second interrupt, or an exception. The `finally` below is the
backstop that makes that true even for exits nobody planned.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.config.load import config_to_dict
from cub.errors import ForceKillRequested, Rejected, SetupFailed
from cub.lifecycle.context import RunContext
from cub.lifecycle.handle import Run
from cub.lifecycle.machine import RunMachine, signal_word
from cub.lifecycle.observer import RunObserver, SilentObserver
from cub.lifecycle.request import RunRequest
from cub.lifecycle.signals import InterruptWatch, StopRequested
from cub.records.location import runs_dir
from cub.records.redact import Redactor
from cub.records.schemas import BudgetUse, HarnessInfo, RunRecord
from cub.records.store import RunStore, new_run_id
from cub.run.recover import recover_project
from cub.run.validation import is_swarm_run, printable_argument, undecodable_argument, validate
from cub.tasks.plan import plan_run
from cub.tasks.selection import explain_empty
from cub.workspace.root import find_project_root

if TYPE_CHECKING:
    from cub.lifecycle.plan import RunPlan
    from cub.modes.github.issue import IssueRun
    from cub.tasks.model import Task
    from cub.tasks.plan import Plan


@dataclass
class RunResult:
    record: RunRecord
    run_dir: Path | None
    ready: list[Task] | None = None  # the dry run's listing: ready now
    plan: Plan | None = None  # and the whole plan


def _open_run(
    mode: str,
    name: str | None,
    cwd: Path,
    argv: list[str],
    *,
    anywhere: bool = False,
    observer: RunObserver | None = None,
    watch: InterruptWatch | None = None,
    recover: bool = True,
) -> tuple[Run, Rejected | None]:
    """Create the run's context, store and machine. Records go to the project's .cub/runs/;
    outside any project only ``anywhere`` runs (direct mode) get a directory of their own.
    ``recover``: first finalise the project's orphaned runs."""
    root = find_project_root(cwd)
    project_dir = root or cwd
    if root is not None and recover:
        for message in recover_project(root):
            print(f"cub: {message}", file=sys.stderr)
    early_rejection = undecodable_argument(argv)
    # The record keeps what was typed, bytes that are not UTF-8 shown as U+FFFD.
    argv = [printable_argument(arg) for arg in argv]
    try:
        run_id = new_run_id(mode, name)
    except Rejected as exc:
        early_rejection, run_id = early_rejection or exc, new_run_id(mode)

    store = None
    if root is not None or anywhere:
        try:
            store = RunStore.create(project_dir, run_id, Redactor())
        except Rejected as exc:  # a run by that --name exists already
            early_rejection = early_rejection or exc
            run_id = new_run_id(mode)
            store = _try_store(project_dir, run_id)
        except OSError as exc:
            print(
                f"cub: cannot write run records under {runs_dir(project_dir)}: {exc}",
                file=sys.stderr,
            )

    ctx = RunContext(
        run_id=run_id,
        mode=mode,
        project_dir=project_dir,
        store=store,
        argv=list(argv),
        cwd=str(cwd),
    )
    watch = watch or InterruptWatch()
    machine = RunMachine(ctx, on_terminal=watch.disarm)
    observer = observer or SilentObserver()
    if store is not None:
        store.on_event = observer.journaled
    return Run(machine=machine, watch=watch, observer=observer), early_rejection


def _finish(run: Run) -> RunResult:
    record = run.machine.record
    assert record is not None
    store = run.ctx.store
    return RunResult(
        record=record,
        run_dir=store.run_dir if store else None,
        ready=run.result_ready,
        plan=run.result_plan,
    )


def execute_run(
    request: RunRequest,
    *,
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: Any = None,
    observer: RunObserver | None = None,
    watch: InterruptWatch | None = None,
) -> RunResult:
    env = os.environ if env is None else env
    # Watch from the start, so a signal during recovery or while the run directory is being
    # created is not lost (SIGTERM's default would kill cub without a record). Unarmed until
    # the machine exists: a second signal before that is raised by `arm()` below. The CLI
    # passes the watch it installed before parsing the command line.
    watch = watch or InterruptWatch(armed=False)
    watch.install()
    try:
        run, early_rejection = _open_run(
            request.mode,
            request.name,
            cwd,
            argv,
            anywhere=request.direct is not None,
            observer=observer,
            watch=watch,
            # A parallel run's child: its parent recovered the project when it started, and
            # recovers any child that dies; a child would only read every run's records again.
            recover=request.parent_run_id is None,
        )
    except BaseException:
        watch.restore()
        raise
    machine = run.machine
    run.ctx.parent_run_id = request.parent_run_id
    try:
        try:
            machine.start()
            watch.arm()
            _drive(run, request, early_rejection, env, stdin)
        except StopRequested as stop:
            _interrupted(run, stop.signum)
    except ForceKillRequested as kill:
        # Also a second signal that arrived while the first one was being handled above.
        _force_killed(run, kill.signum)
    except Exception as exc:
        if not machine.is_terminal:
            machine.crash(error=exc)
    finally:
        # Backstop: whatever escaped above (KeyboardInterrupt, SystemExit, a kill raised while
        # handling another exit), the run still ends in a recorded terminal state.
        if not machine.is_terminal:
            machine.crash(error=RuntimeError("the run ended without reaching a terminal state"))
        elif machine.record is None:
            machine.on_enter_terminal()
        # The process exits next: a signal from now on must not change how it ends.
        watch.restore(ignore_over_default=True)
    return _finish(run)


def reject_invocation(
    argv: list[str], cwd: Path, reason: str, reason_code: str = "usage_error"
) -> RunResult:
    """A command line too malformed to parse still becomes a run, rejected, with a record."""
    run, _ = _open_run("run", None, cwd, argv)
    run.machine.start()
    run.machine.reject(reason=reason, reason_code=reason_code)
    return _finish(run)


def interrupt_invocation(argv: list[str], cwd: Path, signum: int) -> RunResult:
    """Ctrl+C that arrived while the command line was still being parsed."""
    run, _ = _open_run("run", None, cwd, argv)
    run.machine.start()
    _interrupted(run, signum)
    return _finish(run)


def _try_store(project_dir: Path, run_id: str) -> RunStore | None:
    try:
        return RunStore.create(project_dir, run_id, Redactor())
    except (OSError, Rejected):
        return None


def _drive(
    run: Run,
    request: RunRequest,
    early_rejection: Rejected | None,
    env: Mapping[str, str],
    stdin: Any,
) -> None:
    machine, watch = run.machine, run.watch
    watch.checkpoint()
    machine.validate()
    if early_rejection is not None:
        machine.reject(reason=str(early_rejection), reason_code=early_rejection.reason_code)
        return
    try:
        plan, issue = validate(request, run.ctx.project_dir or Path.cwd(), env, stdin)
    except Rejected as exc:
        watch.checkpoint()
        machine.reject(reason=str(exc), reason_code=exc.reason_code)
        return
    if run.ctx.store is None:
        # A run that cannot leave a record does no work.
        machine.reject(
            reason=f"cannot write run records under {runs_dir(plan.project_dir)}; "
            "fix its permissions or free some space",
            reason_code="records_unwritable",
        )
        return
    run.plan = plan
    _record_plan(run.ctx, plan)
    watch.checkpoint()
    machine.accept()
    if request.ready:
        _list_ready(run, plan)
        return
    if request.parent_run_id is None:
        run.ctx.store.mark_latest()
    swarm = is_swarm_run(request, plan.config)
    try:
        _prepare(run, plan, issue, swarm)
        if swarm:
            # Each run loads only its own mode: a plain run or a child starts the faster.
            from cub.modes.swarm.engine import open_engine

            engine = open_engine(run, env)
    except SetupFailed as exc:
        watch.checkpoint()
        run.end_with("setup_failed", exc.reason_code, str(exc))
        return
    watch.checkpoint()
    if swarm:
        from cub.modes.parallel.scheduler import run_parallel  # (as above)

        run_parallel(run, env, engine)
        return
    if request.sandbox:
        from cub.modes.sandbox.supervise import supervise_sandbox  # (as above)

        supervise_sandbox(run)
        return
    if request.parallel is not None:
        from cub.modes.parallel.scheduler import run_parallel  # (as above)

        run_parallel(run, env)
        return
    machine.prepared()
    from cub.loop.runner import run_loop  # a dry run or a rejected run never loads the loop

    run_loop(run)


def _record_plan(ctx: RunContext, plan: RunPlan) -> None:
    config = plan.config
    ctx.config = config_to_dict(config)
    if ctx.store is not None:
        ctx.store.redact = Redactor.for_config(config.redaction)
    budget = config.budget
    ctx.budget = BudgetUse(
        tokens_limit=budget.tokens,
        cost_limit=budget.cost_usd,
        tasks_limit=budget.tasks,
        iterations_limit=config.loop.max_iterations,
    )
    if plan.harness is not None:
        ctx.harness = HarnessInfo(name=plan.harness.name, model=config.harness.model)


def _prepare(run: Run, plan: RunPlan, issue: IssueRun | None, swarm: bool) -> None:
    """Each mode prepares in its own way; a sandboxed run's agent, branch and hooks belong to
    the run inside its container. A swarm run's parent runs no agent: its run branch and
    hooks, no adapter."""
    if swarm:
        from cub.loop.prepare import prepare_checkout, prepare_hooks  # (as above)

        prepare_checkout(run, plan)
        prepare_hooks(run, plan)
    elif plan.request.sandbox:
        from cub.modes.sandbox.supervise import prepare_sandbox  # only its own mode (see _drive)

        prepare_sandbox(run, plan)
    elif issue is not None:
        from cub.modes.github.issue import prepare_issue_run  # (as above)

        prepare_issue_run(run, plan, issue)
    else:
        from cub.loop.prepare import prepare_run  # (as above)

        prepare_run(run, plan)


def _list_ready(run: Run, plan: RunPlan) -> None:
    """The dry run: the whole plan (every task the run would take, in order), not only what
    is ready now."""
    assert plan.backend is not None
    tasks = plan.backend.load()
    request = plan.request
    limits = [
        plan.config.budget.tasks,
        plan.config.loop.max_iterations,
        1 if request.once else None,
    ]
    planned = plan_run(
        tasks,
        epic=request.epic,
        label=request.label,
        task_id=request.task,
        max_tasks=min((n for n in limits if n is not None), default=None),
    )
    ready = [step.task for step in planned.steps if step.ready_now]
    run.result_ready = ready
    run.result_plan = planned
    run.ctx.tasks.selected = len(planned.steps)
    run.machine.note(
        "ready_listed",
        data={
            "task_ids": [t.id for t in ready],
            "plan": [step.task.id for step in planned.steps],
            "waiting": {w.task.id: w.why for w in planned.waiting},
        },
    )
    if planned.steps:
        later = len(planned.steps) - len(ready)
        reason = f"dry run: {len(planned.steps)} task(s) planned, {len(ready)} ready now" + (
            f", {later} once earlier ones are done" if later else ""
        )
    else:
        why = explain_empty(tasks, epic=request.epic, label=request.label)[1]
        reason = f"dry run: nothing ready ({why})"
    run.machine.listed(reason=reason, reason_code="dry_run")


def _interrupted(run: Run, signum: int) -> None:
    """An orderly stop requested outside the loop (validation, setup): nothing to wind down."""
    machine = run.machine
    if machine.is_terminal:
        return
    if machine.state != "stopping":
        machine.interrupt(signal=signum)
    machine.stopped(
        reason=f"stopped on {signal_word(signum).upper()} "  # type: ignore[union-attr]
        f"before any task started",
        reason_code=signal_word(signum),
    )


def _force_killed(run: Run, signum: int) -> None:
    machine = run.machine
    if machine.is_terminal:
        if machine.record is None:
            machine.on_enter_terminal()
        return
    if run.watch.second is None:
        # Under `loop.on_interrupt: finish`, the attempt outlived its grace after one signal.
        machine.force_kill(
            reason="the interrupted attempt did not finish within the grace period: "
            "stopped at once",
            reason_code="grace_expired",
        )
        return
    machine.force_kill(
        reason=f"second interrupt ({signal_word(signum).upper()}): "  # type: ignore[union-attr]
        "stopped at once",
        reason_code="second_interrupt",
    )
