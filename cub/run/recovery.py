"""Crash recovery: give every run whose runner died (SIGKILL, OOM, power loss) its record.

A run is orphaned when its status.json is not terminal, it has no run.json, and nobody holds
its runner lock (the kernel released it when the runner died). Recovery takes that lock itself,
so two cub processes starting at once never finalise the same run twice; kills whatever agent
processes the runner left (matched by pid and create_time, never a reused pid); puts the tasks
it had claimed back to `open`; and fires `force_kill` on a machine restored at the last known
state, so the record is written by the same terminal callback as every other ending.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from cub.records.reader import run_dirs
from cub.records.redact import DEFAULT_SECRET_PATTERNS, Redactor
from cub.records.schemas import Event, StatusRecord, TaskAttempt, Transition
from cub.records.store import RunStore, lock_run, unlock_run, utc_now
from cub.run.context import RunContext
from cub.run.machine import RunMachine

_status_decoder = msgspec.json.Decoder(StatusRecord)


def recover_runs(project_dir: Path) -> list[str]:
    """Finalise every orphaned run under ``project_dir``; returns one message per run."""
    messages = []
    for run_dir in run_dirs(project_dir):
        if (run_dir / "run.json").exists():
            continue
        message = recover_run(project_dir, run_dir)
        if message:
            messages.append(message)
    return messages


def recover_run(project_dir: Path, run_dir: Path) -> str | None:
    fd = lock_run(run_dir)
    if fd is None:
        return None  # its runner (or another recovery) is alive and holds it
    try:
        if (run_dir / "run.json").exists():
            return None
        status = _read_status(run_dir)
        if status is None:
            return None
        _kill_leftovers(status)
        _release_claims(project_dir, status)
        store = RunStore(run_dir, Redactor(DEFAULT_SECRET_PATTERNS))
        _record_lost_attempt(store, status)
        machine = _restore(project_dir, store, status)
        where = f" while {status.current_task.id} was running" if status.current_task else ""
        machine.force_kill(
            reason=f"the runner (pid {status.runner.pid} on {status.runner.host}) died in state "
            f"{status.state}{where}; recorded by recovery",
            reason_code="runner_died",
        )
        return f"recovered run {status.run_id}: its runner died in state {status.state}"
    finally:
        unlock_run(fd)


def _read_status(run_dir: Path) -> StatusRecord | None:
    try:
        status = _status_decoder.decode((run_dir / "status.json").read_bytes())
    except (FileNotFoundError, msgspec.DecodeError):
        return None
    from cub.chart.definition import RUN_CHART

    return None if RUN_CHART.is_terminal(status.state) else status


def _kill_leftovers(status: StatusRecord) -> None:
    task = status.current_task
    if task is None or task.harness_pid is None:
        return
    from cub.agents.supervisor import kill_process_tree

    kill_process_tree(task.harness_pid, task.harness_pid_create_time)


def _release_claims(project_dir: Path, status: StatusRecord) -> None:
    if not status.claimed_tasks:
        return
    from cub.config.load import load_config
    from cub.errors import CubError
    from cub.tasks.backend import open_backend

    try:
        backend = open_backend(project_dir, load_config(project_dir).config)
        for task_id in status.claimed_tasks:
            backend.release(
                task_id, status.run_id, note=f"released by recovery: run {status.run_id} died"
            )
    except (CubError, OSError):
        # The backlog is unreadable right now; the run is still recorded, and the claim stays
        # visible (assignee = this run id) for a person to clear.
        return


def _record_lost_attempt(store: RunStore, status: StatusRecord) -> None:
    """The attempt in flight when the runner died still gets its task.json."""
    task = status.current_task
    if task is None:
        return
    path = store.run_dir / "tasks" / task.id / "task.json"
    if path.exists():
        try:
            if msgspec.json.decode(path.read_bytes(), type=TaskAttempt).attempt >= task.attempt:
                return
        except msgspec.DecodeError:
            pass
    store.write_attempt(
        TaskAttempt(
            task_id=task.id,
            title=task.title,
            attempt=task.attempt,
            outcome="killed",
            started_at=task.started_at,
            ended_at=status.updated_at,
            duration_s=0.0,
            error=None,
        )
    )


def _history(run_dir: Path) -> list[Transition]:
    history = []
    try:
        lines = (run_dir / "events.jsonl").read_bytes().splitlines()
    except FileNotFoundError:
        return history
    for line in lines:
        try:
            event = msgspec.json.decode(line, type=Event)
        except msgspec.DecodeError:
            continue  # a line cut short by the crash
        if event.kind == "transition" and event.state_from and event.state_to:
            history.append(
                Transition(
                    from_=event.state_from,
                    to=event.state_to,
                    trigger=event.trigger or "",
                    at=event.at,
                )
            )
    return history


def _restore(project_dir: Path, store: RunStore, status: StatusRecord) -> RunMachine:
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
        history=_history(store.run_dir),
        current_task=status.current_task,
        runner_create_time=status.runner.create_time,
        ended_at=status.updated_at or utc_now(),
        last_event=status.last_event,
    )
    return RunMachine(ctx, initial=status.state, recorded_by="recovery")
