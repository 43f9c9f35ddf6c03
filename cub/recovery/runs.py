"""Crash recovery: give every run whose runner died (SIGKILL, OOM, power loss) its record.

A run is orphaned when it has no run.json and nobody holds its runner lock (the kernel released
it when the runner died; pids are never trusted for this). Recovery takes that lock itself, so
two cub processes starting at once never finalise the same run twice; kills whatever agent
processes the runner left (the recorded agent by pid and create_time, never a reused pid, and
any process carrying the run's directory in its agent environment); puts the tasks it had
claimed back to `open` (also a claim it died before writing down: the task's assignee says
whose it is); records the attempt in flight as `killed`; and fires `force_kill` on a machine
restored at the last known state, so the record is written by the same terminal callback as
every other ending.

Two deaths leave less to go on: before the first status.json (the run directory names the run,
its lock file the runner), and after the terminal transition but before run.json (the journal
has the ending, which recovery then records as it was).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psutil

from cub import __version__
from cub.agents.run_marker import AGENT_RUN_DIR_VAR, kill_agents_of
from cub.chart.definition import RUN_CHART
from cub.config.load import load_config
from cub.errors import CubError
from cub.hooks.scripts import ENV_HOOK, HOOK_POINTS
from cub.lifecycle.context import RunContext, add_child_totals
from cub.lifecycle.machine import RunMachine
from cub.processes import kill_process_tree
from cub.records.reader import (
    read_events,
    read_run_json,
    read_status_json,
    run_dirs,
    runner_alive,
    runner_still_running,
    runs_dir,
)
from cub.records.redact import Redactor
from cub.records.schemas import (
    BudgetUse,
    ChildRun,
    Event,
    RunnerInfo,
    RunRecord,
    StatusRecord,
    TaskCounts,
    Transition,
)
from cub.records.store import (
    RUNNER_LOCK,
    STAGING_MARK,
    RunStore,
    lock_run,
    read_runner,
    staging_abandoned,
    unlock_run,
    utc_now,
)
from cub.recovery.claims import record_lost_attempts, release_claims, settle_stranded_claims
from cub.workspace.worktree import remove_worktree

# (project_dir, run_dir, context, journal) -> (the data of the run's `<mode>_recovered` note,
# words for its reason).
Salvage = Callable[[Path, Path, RunContext, list[Event]], tuple[dict[str, Any], str]]
# (project_dir, run_dir, journal): bring the run's children here; what could not be done, if
# anything (added to the recovery's message).
Gather = Callable[[Path, Path, list[Event]], str | None]


@dataclass(frozen=True)
class ModeParts:
    """What a mode adds to the recovery of its dead runs. The modes are above recovery: the
    caller that knows them passes theirs in (`cub.run.recover`)."""

    # Before the run's children are looked at (a swarm run's are fetched from its remote).
    gather: Gather | None = None
    # After the steps every run gets (a sandbox's container stopped, its work brought home).
    salvage: Salvage | None = None


def recover_runs(project_dir: Path, modes: Mapping[str, ModeParts] | None = None) -> list[str]:
    """Finalise every orphaned run under ``project_dir``, then settle the claims runs that have
    ended still hold; returns one message per run and per claim."""
    messages = []
    for run_dir in run_dirs(project_dir):
        if STAGING_MARK in run_dir.name:
            _drop_abandoned_staging(run_dir)
            continue
        if (run_dir / "run.json").exists():
            continue
        message = recover_run(project_dir, run_dir, modes)
        if message:
            messages.append(message)
    messages += settle_stranded_claims(project_dir)
    return messages


def recover_run(
    project_dir: Path, run_dir: Path, modes: Mapping[str, ModeParts] | None = None
) -> str | None:
    if not (run_dir / "status.json").exists() and not (run_dir / RUNNER_LOCK).exists():
        return None  # not a run directory
    fd = lock_run(run_dir)
    if fd is None:
        return None  # its runner (or another recovery) is alive and holds it
    try:
        if (run_dir / "run.json").exists():
            return None
        status = read_status_json(run_dir) or _status_before_any(project_dir, run_dir)
        if status is None:
            return None
        if runner_still_running(status):
            return None  # its lock file was deleted (by an agent?), not its runner
        events = read_events(run_dir)
        parts = (modes or {}).get(status.mode, ModeParts())
        left = parts.gather(project_dir, run_dir, events) if parts.gather else None
        also = f"; {left}" if left else ""
        children = _children_of(project_dir, events, modes)
        if children is None:
            return None  # a child is still stopping: the parent is recorded once it has ended
        store = RunStore(run_dir, _redactor(project_dir))
        _kill_leftovers(run_dir, status)
        held, closed = release_claims(project_dir, run_dir, status)
        ended = _journaled_ending(events)
        if ended is not None or RUN_CHART.is_terminal(status.state):
            # The runner entered its terminal state (the journal or status.json says so) and
            # died before run.json: record that ending, status.json first, run.json last.
            if ended is not None:
                status = msgspec.structs.replace(status, state=ended)
            machine = _restore_ending(project_dir, store, status, events)
            _finish_mode(project_dir, machine, status, events, children)
            machine.write_status()
            machine.on_enter_terminal()
            return f"recovered run {status.run_id}: its runner died recording {status.state}{also}"
        killed = record_lost_attempts(store, status, held, events)
        machine = _restore(project_dir, store, status, events)
        machine.ctx.tasks.killed += killed
        machine.ctx.tasks.succeeded += len(closed)
        _finish_mode(project_dir, machine, status, events, children)
        where = f" while {status.current_task.id} was running" if status.current_task else ""
        salvaged = ""
        if parts.salvage is not None:
            done, salvaged = parts.salvage(project_dir, run_dir, machine.ctx, events)
            machine.note(f"{status.mode}_recovered", data=done)
        machine.force_kill(
            reason=f"the runner (pid {status.runner.pid} on {status.runner.host}) died in state "
            f"{status.state}{where}; recorded by recovery{salvaged}",
            reason_code="runner_died",
        )
        return f"recovered run {status.run_id}: its runner died in state {status.state}{also}"
    finally:
        unlock_run(fd)


def _children_of(
    project_dir: Path, events: list[Event], modes: Mapping[str, ModeParts] | None
) -> list[tuple[str, RunRecord]] | None:
    """A parallel parent's child runs (the ``child_started`` notes in its journal), each with
    its own final record, recovered first when its runner died too. None while one of them is
    still alive: the children of a parent that died get SIGTERM and stop in order, and the
    parent's record must list how they ended."""
    started = {
        e.data["run_id"]: e.task_id or ""
        for e in events
        if e.kind == "child_started" and isinstance(e.data.get("run_id"), str)
    }
    children = []
    for child_id, task_id in started.items():
        child_dir = runs_dir(project_dir) / child_id
        if not child_dir.is_dir():
            continue  # it died before its run existed: nothing ran, nothing to record
        if not (child_dir / "run.json").exists():
            recover_run(project_dir, child_dir, modes)
        record = read_run_json(child_dir)
        if record is None:
            if runner_alive(child_dir):
                return None
            continue  # no readable record even now: `cub runs show` says why
        children.append((task_id, record))
    return children


def _finish_mode(
    project_dir: Path,
    machine: RunMachine,
    status: StatusRecord,
    events: list[Event],
    children: list[tuple[str, RunRecord]],
) -> None:
    """What the dead runner's mode would have done at its end, as far as it can be done now:
    a parallel parent's children listed and summed, a worktree removed, temp files dropped."""
    if children:
        _account_children(project_dir, machine, children)
    _finish_worktree(project_dir, machine, status, events)
    _drop_temp_files(machine.ctx.store.run_dir if machine.ctx.store else None)


def _account_children(
    project_dir: Path, machine: RunMachine, children: list[tuple[str, RunRecord]]
) -> None:
    """The parent's record lists every child with its state and sums their tasks and usage
    (each child's own record is the truth: the parent may have died before collecting it)."""
    ctx = machine.ctx
    ctx.children = [
        ChildRun(
            run_id=record.run_id,
            state=record.state,
            task_id=task_id or None,
            exit_code=record.exit_code,
            reason_code=record.reason_code,
        )
        for task_id, record in children
    ]
    ctx.tasks = TaskCounts()
    spent = BudgetUse()
    for _, record in children:
        add_child_totals(ctx, spent, record)
    ctx.budget.tokens_used, ctx.budget.cost_usd = spent.tokens_used, spent.cost_usd
    ctx.budget.cost_incomplete = spent.cost_incomplete
    ctx.budget.tasks_used = len(children)
    machine.note(
        "children_recovered",
        data={"children": {child.run_id: child.state for child in ctx.children}},
    )


def _finish_worktree(
    project_dir: Path, machine: RunMachine, status: StatusRecord, events: list[Event]
) -> None:
    """The dead run's worktree (journaled when it was made) is removed as the run's own end
    would have removed it, its branch and commits kept; with --worktree-keep, or when git
    cannot remove it, where it is goes into the record."""
    made = next((e for e in reversed(events) if e.kind == "worktree"), None)
    path = made.data.get("path") if made is not None else None
    if not isinstance(path, str) or not Path(path).exists():
        return
    problem = None if "--worktree-keep" not in status.argv else "--worktree-keep"
    if problem is None:
        problem = remove_worktree(project_dir, Path(path))
    machine.note(
        "worktree_removed" if problem is None else "worktree_left",
        data={"path": path, "problem": problem},
    )


def _drop_temp_files(run_dir: Path | None) -> None:
    """Temp files the dead runner was writing when it died (see `write_atomic`): never
    renamed into place, never to be."""
    if run_dir is None:
        return
    for tmp in run_dir.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _redactor(project_dir: Path) -> Redactor:
    """The project's redaction settings, as the runner had them (the defaults if its config
    cannot be read now)."""
    try:
        return Redactor.for_config(load_config(project_dir).config.redaction)
    except (CubError, OSError):
        return Redactor()


def _journaled_ending(events: list[Event]) -> str | None:
    """The terminal state the journal's last transition entered, if it entered one."""
    last = next((e for e in reversed(events) if e.kind == "transition"), None)
    if last is None or last.state_to is None or not RUN_CHART.is_terminal(last.state_to):
        return None
    return last.state_to


def _drop_abandoned_staging(staging: Path) -> None:
    """A run directory whose creator died before renaming it into place (see RunStore.create)."""
    if not staging_abandoned(staging):
        return  # still being created (its creator may not even hold its lock yet)
    fd = lock_run(staging)
    if fd is None:
        return  # another recovery is removing it
    try:
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        unlock_run(fd)


def _status_before_any(project_dir: Path, run_dir: Path) -> StatusRecord | None:
    """The runner died after creating the run's directory, before its first status.json:
    what the directory itself says (its lock file names the runner)."""
    if (run_dir / "status.json").exists():
        return None  # unreadable, not missing: leave it for a person to look at
    runner = read_runner(run_dir) or RunnerInfo(pid=0, create_time=0.0, host="unknown")
    try:
        mtime = (run_dir / RUNNER_LOCK).stat().st_mtime
        stamp = datetime.fromtimestamp(mtime, UTC).isoformat(timespec="milliseconds")
    except OSError:
        stamp = utc_now()
    return StatusRecord(
        run_id=run_dir.name,
        mode="run",
        state=RUN_CHART.initial,
        started_at=stamp,
        updated_at=stamp,
        argv=[],
        cwd=str(project_dir),
        pid=runner.pid,
        host=runner.host,
        cub_version=__version__,
        runner=runner,
    )


def _kill_leftovers(run_dir: Path, status: StatusRecord) -> None:
    task = status.current_task
    if task is not None and task.harness_pid is not None:
        kill_process_tree(task.harness_pid, task.harness_pid_create_time)
    # Whatever is left of any agent it started, even one whose root has exited, whose pid
    # was never written down, or that escaped with setsid().
    kill_agents_of(run_dir)
    kill_hooks_of(run_dir)


def kill_hooks_of(run_dir: Path) -> list[int]:
    """SIGKILL the process group of every hook of the run still running: a hook runs as the
    leader of a session of its own (`run_in_group`), with ``CUB_HOOK`` and ``CUB_RUN_DIR`` in
    its environment and its own path on its command line. A service a finished hook left
    behind in a session of its own is not the hook, and is left alone, as the runner would
    have left it. Returns the group ids killed."""
    wanted = f"{AGENT_RUN_DIR_VAR}={run_dir.resolve()}"
    killed = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) != proc.pid:
                continue
            env = proc.environ()
            point = env.get(ENV_HOOK)
            if (
                point not in HOOK_POINTS
                or f"{AGENT_RUN_DIR_VAR}={env.get(AGENT_RUN_DIR_VAR)}" != wanted
            ):
                continue
            if not any(f"/{point}.d/" in arg for arg in proc.cmdline()):
                continue
            os.killpg(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return killed


def _history(events: list[Event]) -> list[Transition]:
    return [
        Transition(from_=e.state_from, to=e.state_to, trigger=e.trigger or "", at=e.at)
        for e in events
        if e.kind == "transition" and e.state_from and e.state_to
    ]


def _restore_ending(
    project_dir: Path, store: RunStore, status: StatusRecord, events: list[Event]
) -> RunMachine:
    """A machine at the terminal state the runner entered, with the ending its journal gave."""
    machine = _restore(project_dir, store, status, events)
    ctx = machine.ctx
    last = next((e for e in reversed(events) if e.state_to == status.state), None)
    data = last.data if last is not None else {}
    code = data.get("reason_code")
    if code is None and last is not None:  # the trigger was fired without one: its default
        edge = next(
            (e for e in RUN_CHART.edges if (e.trigger, e.dest) == (last.trigger, status.state)),
            None,
        )
        code = edge.reason_codes[0] if edge is not None and edge.reason_codes else None
    ctx.reason_code = code or "runner_died"
    ctx.reason = data.get("reason") or (
        f"the runner died while recording its {status.state} ending; recorded by recovery"
    )
    return machine


def _restore(
    project_dir: Path, store: RunStore, status: StatusRecord, events: list[Event]
) -> RunMachine:
    ctx = RunContext(
        run_id=status.run_id,
        mode=status.mode,
        project_dir=project_dir,
        store=store,
        argv=status.argv,
        cwd=status.cwd,
        parent_run_id=status.parent_run_id,
        started_at=status.started_at,
        pid=status.runner.pid,
        host=status.runner.host,
        cub_version=status.cub_version,
        harness=status.harness,
        branch=status.branch,
        tasks=status.tasks,
        budget=status.budget,
        history=_history(events),
        current_task=status.current_task,
        runner_create_time=status.runner.create_time,
        ended_at=status.updated_at or utc_now(),
        last_event=status.last_event,
    )
    return RunMachine(ctx, initial=status.state, recorded_by="recovery")
