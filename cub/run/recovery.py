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

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from cub import __version__
from cub.chart.definition import RUN_CHART
from cub.records.reader import read_events, read_status_json, run_dirs
from cub.records.redact import Redactor
from cub.records.schemas import Event, RunnerInfo, StatusRecord, TaskAttempt, Transition
from cub.records.store import (
    RUNNER_LOCK,
    STAGING_MARK,
    RunStore,
    lock_run,
    read_runner,
    unlock_run,
    utc_now,
)
from cub.run.context import RunContext
from cub.run.machine import RunMachine

if TYPE_CHECKING:
    from cub.tasks.model import Task

# Set in every agent's environment to its run's directory, so that recovery can find what a
# dead runner's agents left behind however they got away from their process tree.
AGENT_RUN_DIR_VAR = "CUB_RUN_DIR"  # hooks get the same variable (cub.loop.hooks.ENV_RUN_DIR)


def recover_runs(project_dir: Path) -> list[str]:
    """Finalise every orphaned run under ``project_dir``; returns one message per run."""
    messages = []
    for run_dir in run_dirs(project_dir):
        if STAGING_MARK in run_dir.name:
            _drop_abandoned_staging(run_dir)
            continue
        if (run_dir / "run.json").exists():
            continue
        message = recover_run(project_dir, run_dir)
        if message:
            messages.append(message)
    return messages


def recover_run(project_dir: Path, run_dir: Path) -> str | None:
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
        store = RunStore(run_dir, _redactor(project_dir))
        _kill_leftovers(run_dir, status)
        held = _release_claims(project_dir, status)
        events = read_events(run_dir)
        ended = _journaled_ending(events)
        if ended is not None or RUN_CHART.is_terminal(status.state):
            # The runner entered its terminal state (the journal or status.json says so) and
            # died before run.json: record that ending, status.json first, run.json last.
            if ended is not None:
                status = msgspec.structs.replace(status, state=ended)
            machine = _restore_ending(project_dir, store, status, events)
            machine.write_status()
            machine.on_enter_terminal()
            return f"recovered run {status.run_id}: its runner died recording {status.state}"
        killed = _record_lost_attempts(store, status, held)
        machine = _restore(project_dir, store, status, events)
        machine.ctx.tasks.killed += killed
        where = f" while {status.current_task.id} was running" if status.current_task else ""
        salvaged = ""
        if status.mode == "sandbox":
            # Its container outlives it, and its work is still in the sandbox's workspace.
            from cub.modes.sandbox_recovery import recover_sandbox

            done, salvaged = recover_sandbox(project_dir, run_dir, machine.ctx, events)
            machine.note("sandbox_recovered", data=done)
        machine.force_kill(
            reason=f"the runner (pid {status.runner.pid} on {status.runner.host}) died in state "
            f"{status.state}{where}; recorded by recovery{salvaged}",
            reason_code="runner_died",
        )
        return f"recovered run {status.run_id}: its runner died in state {status.state}"
    finally:
        unlock_run(fd)


def _redactor(project_dir: Path) -> Redactor:
    """The project's redaction settings, as the runner had them (the defaults if its config
    cannot be read now)."""
    from cub.config.load import load_config
    from cub.errors import CubError

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
    fd = lock_run(staging)
    if fd is None:
        return  # still being created
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
    from cub.agents.supervisor import kill_process_tree

    task = status.current_task
    if task is not None and task.harness_pid is not None:
        kill_process_tree(task.harness_pid, task.harness_pid_create_time)
    # Whatever is left of any agent it started, even one whose root has exited, whose pid
    # was never written down, or that escaped with setsid().
    kill_agents_of(run_dir)


def kill_agents_of(run_dir: Path) -> None:
    """Kill every process that carries the run in ``run_dir`` in its agent environment."""
    from cub.agents.supervisor import kill_processes_with_env

    kill_processes_with_env(f"{AGENT_RUN_DIR_VAR}={run_dir.resolve()}")


def agent_env(run_dir: Path) -> dict[str, str]:
    """What every agent of the run in ``run_dir`` gets in its environment for recovery."""
    return {AGENT_RUN_DIR_VAR: str(run_dir.resolve())}


def _release_claims(project_dir: Path, status: StatusRecord) -> list[Task]:
    """Give the dead run's claims back to the backlog; returns the tasks it held."""
    from cub.config.load import load_config
    from cub.errors import CubError
    from cub.tasks.backend import open_backend
    from cub.tasks.changes import owned_by

    note = f"released by recovery: run {status.run_id} died"
    try:
        backend = open_backend(project_dir, load_config(project_dir).config)
        # Also a claim the runner made but died before writing down in status.json.
        held = [t for t in backend.load() if owned_by(t, status.run_id)]
        for task_id in dict.fromkeys([*status.claimed_tasks, *(t.id for t in held)]):
            # Killed with its runner: not an attempt of the task's own.
            backend.release(task_id, status.run_id, note=note, uncount=True)
    except (CubError, OSError):
        # The backlog is unreadable right now; the run is still recorded, and the claim stays
        # visible (assignee = this run id) for a person to clear.
        return []
    return held


def _record_lost_attempts(store: RunStore, status: StatusRecord, held: list[Task]) -> int:
    """The attempt in flight when the runner died still gets its task.json: the one status.json
    names, or one of its claims whose agent had started (its harness.log exists) before the
    runner could write that down. Returns how many were recorded."""
    lost = []
    if status.current_task is not None:
        task = status.current_task
        lost.append((task.id, task.title, task.attempt, task.started_at))
    for claim in held:
        task_dir = store.run_dir / "tasks" / claim.id
        if (task_dir / "harness.log").exists() and all(claim.id != known for known, *_ in lost):
            # The prompt is written just before the agent starts.
            started = datetime.fromtimestamp((task_dir / "prompt.md").stat().st_mtime, UTC)
            lost.append((claim.id, claim.title, claim.attempts, started.isoformat()))
    recorded = 0
    for task_id, title, attempt, started_at in lost:
        path = store.run_dir / "tasks" / task_id / "task.json"
        if path.exists():
            try:
                if msgspec.json.decode(path.read_bytes(), type=TaskAttempt).attempt >= attempt:
                    continue
            except msgspec.DecodeError:
                pass
        recorded += 1
        store.write_attempt(
            TaskAttempt(
                task_id=task_id,
                title=title,
                attempt=attempt,
                outcome="killed",
                started_at=started_at,
                ended_at=status.updated_at,
                duration_s=0.0,
                error=None,
            )
        )
    return recorded


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
