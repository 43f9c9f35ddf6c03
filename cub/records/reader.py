"""Reading recorded runs back: the final record when there is one, else the live status."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path
from socket import gethostname

import msgspec

from cub.processes import process_matches
from cub.records.durable import replace_symlink
from cub.records.location import runs_dir
from cub.records.schemas import (
    BudgetUse,
    Event,
    RunRecord,
    StatusRecord,
    TaskAttempt,
    TaskCounts,
)
from cub.records.store import lock_run, runs_root_is_linked, unlock_run

_run_decoder = msgspec.json.Decoder(RunRecord)
_status_decoder = msgspec.json.Decoder(StatusRecord)


class RunNotFound(LookupError):
    pass


def run_dirs(project_dir: Path) -> list[Path]:
    return [Path(d) for d in _run_dir_paths(project_dir)]


def _run_dir_paths(project_dir: Path) -> list[str]:
    # Plain strings from scandir, whose entry types come with the listing: no stat and no
    # Path object per run (for 10,000 runs, 10 ms instead of 200).
    root = runs_dir(project_dir)
    if runs_root_is_linked(root):
        return []  # not the project's records (and recovery must not write there)
    try:
        with os.scandir(root) as entries:
            return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def unfinished_run_dirs(project_dir: Path) -> list[Path]:
    """Run directories without a run.json (live runs, dead ones for recovery to finalise,
    ones still being created): what recovery has to look at. Cheap enough to ask every time."""
    return [
        Path(d)
        for d in _run_dir_paths(project_dir)
        if not os.path.exists(os.path.join(d, "run.json"))
    ]


def read_run_json(run_dir: Path) -> RunRecord | None:
    """The run's final record; None until it is written (or if it cannot be read)."""
    try:
        return _run_decoder.decode((run_dir / "run.json").read_bytes())
    except (OSError, msgspec.DecodeError, RecursionError):
        return None


def read_status_json(run_dir: Path) -> StatusRecord | None:
    """The run's live status; None if there is none (or it cannot be read)."""
    try:
        return _status_decoder.decode((run_dir / "status.json").read_bytes())
    except (OSError, msgspec.DecodeError, RecursionError):
        return None


def load_record(run_dir: Path) -> RunRecord | StatusRecord | None:
    """run.json if the run has ended, else status.json; None if neither is readable."""
    return read_run_json(run_dir) or read_status_json(run_dir)


def resolve_run(project_dir: Path, run_id: str) -> Path:
    root = runs_dir(project_dir)
    if run_id == "latest":
        # cub points it at a run's name; a link planted to lead elsewhere is not followed.
        try:
            run_id = os.readlink(root / "latest")
        except OSError:
            # Never pointed (a run recovered before it could point it): the newest that did
            # work, as the link would say.
            worked = [s for s in list_summaries(project_dir) if did_work(s)]
            if not worked:
                raise RunNotFound(f"no runs recorded in {root}") from None
            run_id = worked[0].run_id
    path = root / run_id
    if "/" in run_id or run_id in (".", "..") or path.is_symlink() or not path.is_dir():
        raise RunNotFound(f"no run {run_id!r} in {root}")
    return path


class RunSummary(msgspec.Struct, kw_only=True):
    """The fields a listing shows, decoded from run.json (or status.json for a live run)
    without the history and config, which a listing never needs."""

    run_id: str
    mode: str
    state: str
    started_at: str
    parent_run_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    reason_code: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    tasks: TaskCounts = msgspec.field(default_factory=TaskCounts)
    budget: BudgetUse = msgspec.field(default_factory=BudgetUse)
    live: bool = False


_summary_decoder = msgspec.json.Decoder(RunSummary)


def load_summary(run_dir: Path | str) -> RunSummary | None:
    for name, live in (("run.json", False), ("status.json", True)):
        try:
            with open(os.path.join(run_dir, name), "rb") as fh:
                summary = _summary_decoder.decode(fh.read())
        except (FileNotFoundError, NotADirectoryError, msgspec.DecodeError, RecursionError):
            continue
        summary.live = live
        return summary
    return None


def list_summaries(
    project_dir: Path,
    *,
    state: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[RunSummary]:
    """Runs newest first, filtered by terminal state and start time."""
    found = _located_summaries(project_dir, state=state, since=since)
    return [s for _, s in (found[:limit] if limit is not None else found)]


def _located_summaries(
    project_dir: Path, *, state: str | None = None, since: datetime | None = None
) -> list[tuple[str, RunSummary]]:
    """(directory, summary) of every readable run, newest first."""
    found = [(d, s) for d in _run_dir_paths(project_dir) if (s := load_summary(d)) is not None]
    if state is not None:
        found = [(d, s) for d, s in found if s.state == state]
    if since is not None:
        found = [(d, s) for d, s in found if datetime.fromisoformat(s.started_at) >= since]
    found.sort(key=lambda item: (item[1].started_at, item[1].run_id), reverse=True)
    return found


def task_attempts(run_dir: Path) -> list[tuple[Path, TaskAttempt]]:
    """Every recorded attempt of a run (earlier ones under attempt-N/), in start order."""
    found = []
    for path in sorted((run_dir / "tasks").glob("*/task.json")) + sorted(
        (run_dir / "tasks").glob("*/attempt-*/task.json")
    ):
        try:
            found.append((path.parent, _attempt_decoder.decode(path.read_bytes())))
        except (msgspec.DecodeError, RecursionError):
            continue
    found.sort(key=lambda item: item[1].started_at)
    return found


_attempt_decoder = msgspec.json.Decoder(TaskAttempt)


def read_events(run_dir: Path) -> list[Event]:
    try:
        lines = (run_dir / "events.jsonl").read_bytes().splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(_event_decoder.decode(line))
        except (msgspec.DecodeError, RecursionError):
            continue
    return events


_event_decoder = msgspec.json.Decoder(Event)


def is_live(run_dir: Path) -> bool:
    """A run whose runner is alive (it holds the run's lock)."""
    if (run_dir / "run.json").exists():
        return False
    fd = lock_run(run_dir)
    if fd is None:
        return run_dir.is_dir()  # held, unless the directory is gone (pruned meanwhile)
    unlock_run(fd)
    return False


def prune_runs(
    project_dir: Path,
    *,
    keep: int | None,
    older_than: datetime | None,
) -> list[str]:
    """Delete finished runs beyond the newest ``keep`` or started before ``older_than``.
    A live run is never touched. Returns the removed run ids."""
    removed = []
    finished = [(d, s) for d, s in _located_summaries(project_dir) if not s.live]
    for index, (path, summary) in enumerate(finished):
        too_many = keep is not None and index >= keep
        too_old = older_than is not None and datetime.fromisoformat(summary.started_at) < older_than
        if not (too_many or too_old):
            continue
        # Held while its runner lives, which may outlast run.json by a moment (the summary,
        # cleanup); taken here for the removal, so no runner or recovery starts meanwhile.
        run_dir = Path(path)
        fd = lock_run(run_dir)
        if fd is None:
            continue
        try:
            shutil.rmtree(run_dir)
        finally:
            unlock_run(fd)
        removed.append(run_dir.name)
    _repoint_latest(project_dir)
    return removed


def _repoint_latest(project_dir: Path) -> None:
    link = runs_dir(project_dir) / "latest"
    if link.is_symlink() and not link.exists():
        remaining = [s for s in list_summaries(project_dir) if did_work(s)]
        if remaining:
            replace_symlink(link, remaining[0].run_id)
        else:
            link.unlink()


def did_work(summary: RunSummary) -> bool:
    """A run that was accepted to do work: not a dry run, not a rejection, not a child of a
    parallel run (its parent is the run a person started)."""
    return (
        summary.state != "validation_rejected"
        and summary.reason_code != "dry_run"
        and summary.parent_run_id is None
    )


def runner_alive(run_dir: Path) -> bool:
    """Whether a process holds the run's lock (its runner, or a recovery finalising it)."""
    fd = lock_run(run_dir)
    if fd is None:
        return True
    unlock_run(fd)
    status = read_status_json(run_dir)
    return status is not None and runner_still_running(status)


def runner_still_running(status: StatusRecord) -> bool:
    """The runner status.json names is alive (same pid and start time, on this host).

    The lock is the first test, but its file is a file: an agent that deletes ``*.lock`` in
    the tree makes a fresh, unheld lock appear in its place. So a free lock is believed only
    when the runner it should belong to is gone too."""
    runner = status.runner
    return runner.host == gethostname() and process_matches(runner.pid, runner.create_time)
