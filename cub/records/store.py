"""The run directory: where a run's records live and the only code that writes them.

<runs>/<run_id>/status.json   rewritten at every transition
<runs>/<run_id>/events.jsonl  one fsynced line per transition or event
<runs>/<run_id>/run.json      the final record, written last
<runs>/<run_id>/tasks/<task_id>/{prompt.md,harness.log,task.json}

``<runs>`` is the project's runs directory, out of the agent's reach (`cub.records.location`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from socket import gethostname
from typing import Any

import msgspec
import psutil

from cub.chart.definition import RUN_CHART
from cub.errors import Rejected
from cub.processes import process_matches
from cub.records.durable import (
    append_line,
    fsync_dir,
    make_private_dir,
    replace_symlink,
    write_atomic,
)
from cub.records.location import runs_dir
from cub.records.redact import Redactor
from cub.records.schemas import (
    JSON_ENCODER,
    Event,
    RunnerInfo,
    RunRecord,
    StatusRecord,
    TaskAttempt,
    encode,
)

# Record fields cub fills from a vocabulary of its own (states, outcomes, reason codes) or its
# clock: never a secret, and masking one (a redaction pattern is the user's regex) would leave
# a record that no longer decodes into its schema.
_UNREDACTED_FIELDS = frozenset(
    {
        "schema_version",
        "mode",
        "state",
        "outcome",
        "reason_code",
        "recorded_by",
        "kind",
        "trigger",
        "state_from",
        "state_to",
        "from_",
        "to",
        "at",
        "started_at",
        "ended_at",
        "updated_at",
    }
)

# Words used in generated run ids, per run mode.
_RUN_ID_PREFIX = {
    "run": "run",
    "direct": "direct",
    "gh-issue": "gh",
    "sandbox": "sandbox",
    "parallel": "parallel",
    "dry-run": "dry",
}

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def utc_now() -> str:
    """UTC ISO-8601 with an explicit offset, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_safe_name(name: str, what: str) -> None:
    """Names that become directory names must never lead outside their parent."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name or name in (".",):
        raise Rejected(
            "invalid_name",
            f"invalid {what} {name!r}: use 1-128 of A-Z a-z 0-9 . _ - and no '..'",
        )


# Names cub itself uses in the runs directory: the link to the newest run. Names starting
# with "." are cub's too (the link's and the records' temp files, run directories being made).
RESERVED_RUN_NAMES = frozenset({"latest"})


def check_run_name(name: str, what: str) -> None:
    """A run's name becomes its directory's: never one that cub uses beside the runs."""
    check_safe_name(name, what)
    if name in RESERVED_RUN_NAMES or name.startswith("."):
        raise Rejected(
            "invalid_name",
            f"invalid {what} {name!r}: "
            + (
                f"{name!r} is reserved (cub's link to the newest run)"
                if name in RESERVED_RUN_NAMES
                else "names starting with '.' are reserved for cub's own files"
            ),
        )


def new_run_id(mode: str, name: str | None = None) -> str:
    if name is not None:
        check_run_name(name, "run name (--name)")
        return name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{_RUN_ID_PREFIX.get(mode, 'run')}-{stamp}-{secrets.token_hex(2)}"


class RunStore:
    """Writes one run's directory. Every write is atomic and durable; secrets are redacted."""

    def __init__(self, run_dir: Path, redactor: Redactor) -> None:
        self.run_dir = run_dir
        self.redact = redactor
        self._seq = _last_seq(run_dir / "events.jsonl")
        self.runner_lock: int | None = None
        # Told each journal line (redacted) once it is on disk: `cub run --verbose` prints them.
        self.on_event: Callable[[str], None] | None = None

    @classmethod
    def create(cls, project_dir: Path, run_id: str, redactor: Redactor) -> RunStore:
        runs = runs_dir(project_dir)
        check_runs_root(runs)
        make_private_dir(runs)
        run_dir = runs / run_id
        taken = Rejected("invalid_name", f"a run named {run_id!r} already exists in {runs}")
        if run_dir.exists():
            raise taken
        # The directory is built under a name no run can have (it holds "..") and renamed
        # into place with its runner lock already held, so recovery, which finalises every
        # run whose lock is free, never takes a run being created for a dead one. The name
        # also says who is creating it, from the instant it exists (before the lock can be
        # taken): recovery removes it only once that process is gone.
        runner = _this_runner()
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(run_id, runner), dir=runs))
        lock = lock_run(staging)
        try:
            if lock is None:
                raise OSError(errno.EAGAIN, "the run's new directory was locked by another process")
            os.write(lock, encode(runner))
            os.rename(staging, run_dir)
        except BaseException as exc:
            if lock is not None:
                unlock_run(lock)
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise taken from None
            raise
        fsync_dir(runs)
        store = cls(run_dir, redactor)
        store.runner_lock = lock
        store.reserve_space()
        return store

    def mark_latest(self) -> None:
        """Point ``latest`` here: done once the run has been accepted to do work, so that a
        dry run, a rejected command line or a child of a parallel run never takes it."""
        replace_symlink(self.run_dir.parent / "latest", self.run_dir.name)

    # -- records ----------------------------------------------------------------------------

    def _write_json(self, path: Path, record: msgspec.Struct, *, final: bool = False) -> None:
        data = encode(self.redact.value(record, keep=_UNREDACTED_FIELDS))
        self._on_reserve_if(final, lambda: write_atomic(path, data))

    def write_status(self, status: StatusRecord) -> None:
        final = RUN_CHART.is_terminal(status.state)
        self._write_json(self.run_dir / "status.json", status, final=final)

    def write_run(self, record: RunRecord) -> None:
        self._write_json(self.run_dir / "run.json", record, final=True)
        self._release_reserve()  # the record is whole: nothing more needs the room

    # -- room for the final record ------------------------------------------------------------

    def reserve_space(self) -> None:
        """Set aside room on the run's filesystem for its ending (the terminal journal line,
        status.json, run.json), given back when a write of those finds the disk full: a run
        whose agent filled the disk still records how it ended, and so exits with the code its
        record says. Best effort: without the room (a filesystem that cannot allocate it) the
        run goes on as before."""
        try:
            fd = os.open(self.run_dir / RESERVE, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.run_dir / RESERVE)
        finally:
            os.close(fd)

    def _release_reserve(self) -> bool:
        """Give the reserved room back; False if there was none left to give."""
        try:
            os.unlink(self.run_dir / RESERVE)
        except OSError:
            return False
        return True

    def _on_reserve_if(self, final: bool, write: Callable[[], None]) -> None:
        """``write``; for a ``final`` record that finds the disk full, again on the room the
        run reserved."""
        try:
            write()
        except OSError as exc:
            if not (final and exc.errno in _NO_SPACE and self._release_reserve()):
                raise
            write()

    def append_event(
        self,
        kind: str,
        *,
        state_from: str | None = None,
        state_to: str | None = None,
        trigger: str | None = None,
        task_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        seq = self._seq + 1
        event = Event(
            at=utc_now(),
            seq=seq,
            kind=kind,
            state_from=state_from,
            state_to=state_to,
            trigger=trigger,
            task_id=task_id,
            data=data or {},
        )
        path = self.run_dir / "events.jsonl"
        _drop_symlink(path)  # appended to by name: never through a link planted in its place
        line = JSON_ENCODER.encode(self.redact.value(event, keep=_UNREDACTED_FIELDS))
        final = kind == "transition" and RUN_CHART.is_terminal(state_to or "")
        try:
            self._on_reserve_if(final, lambda: append_line(path, line))
        except BaseException:
            # Cut short (a forced kill raised while fsync ran) before or after the line was
            # written: go on from what the file holds, so the numbering has no gap or repeat.
            self._seq = _last_seq(path)
            raise
        self._seq = seq
        if self.on_event is not None:
            # Only a view of what is already on disk: a console gone away (a closed pipe)
            # must not become the run's failure.
            with contextlib.suppress(Exception):
                self.on_event(line.decode())
        return event

    # -- per-task files ---------------------------------------------------------------------

    def task_dir(self, task_id: str) -> Path:
        """The task's directory, made a real one: an agent knows the run's directory and may
        have planted symlinks there (``tasks/t2 -> /elsewhere``, ``tasks/t2/harness.log ->
        ~/.bashrc``); none of them may lead a record, or the agent's output, outside."""
        check_safe_name(task_id, "task id")
        path = _real_dir(_real_dir(self.run_dir / "tasks") / task_id)
        _drop_symlinks(path)
        return path

    def write_prompt(self, task_id: str, text: str) -> Path:
        path = self.task_dir(task_id) / "prompt.md"
        # Its name is made durable with the attempt's task.json, which every attempt that
        # starts gets, in the same directory.
        write_atomic(path, self.redact(text).encode(), sync_dir=False)
        return path

    def harness_log_path(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "harness.log"

    def write_attempt(self, attempt: TaskAttempt) -> None:
        self._write_json(self.task_dir(attempt.task_id) / "task.json", attempt)

    def archive_attempt(self, task_id: str) -> Path | None:
        """Before a retry in the same run, keep the previous attempt's files under attempt-N/;
        returns that directory (None when this run has no earlier attempt of the task)."""
        current = self.task_dir(task_id)
        record = current / "task.json"
        if not record.exists():
            return None
        previous = msgspec.json.decode(record.read_bytes(), type=TaskAttempt)
        archive = current / f"attempt-{previous.attempt}"
        make_private_dir(archive)
        for name in ("prompt.md", "harness.log", "task.json"):
            if (current / name).exists():
                os.replace(current / name, archive / name)
        return archive


def check_runs_root(runs: Path) -> None:
    """Refuse a runs directory reached through a symlink (one planted as ``.git/cub -> /tmp/x``,
    say): every record, and recovery's writes, would land wherever it points."""
    for step in (runs.parent, runs):
        if step.is_symlink():
            raise Rejected(
                "records_unwritable",
                f"{step} is a symlink (to {os.readlink(step)}): cub writes run records "
                "only into a real directory; remove the link",
            )


def runs_root_is_linked(runs: Path) -> bool:
    try:
        check_runs_root(runs)
    except Rejected:
        return True
    return False


def _real_dir(path: Path) -> Path:
    _drop_symlink(path)
    make_private_dir(path)
    return path


def _drop_symlink(path: Path) -> None:
    if path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _drop_symlinks(directory: Path) -> None:
    """cub never makes a symlink in a task's directory: any there was planted."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _last_seq(events: Path) -> int:
    """The seq of the journal's last whole line, so a reopened journal continues its count."""
    try:
        data = events.read_bytes()
    except FileNotFoundError:
        return 0
    for line in reversed(data.splitlines()):
        try:
            return msgspec.json.decode(line, type=Event).seq
        except (msgspec.DecodeError, RecursionError):
            continue
    return 0


RUNNER_LOCK = "runner.lock"
# Room set aside for a run's final record (see `RunStore.reserve_space`): a run of a thousand
# tasks has a run.json of about 500 KiB (its history and config).
RESERVE = ".final-record-reserve"
RESERVE_BYTES = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# In the name of a run directory still being created (see `RunStore.create`); never in a run id.
STAGING_MARK = ".."


def _this_runner() -> RunnerInfo:
    pid = os.getpid()
    return RunnerInfo(pid=pid, create_time=psutil.Process(pid).create_time(), host=gethostname())


def read_runner(run_dir: Path) -> RunnerInfo | None:
    """Who created the run, as written in its lock file; None for older runs or a torn write."""
    try:
        return msgspec.json.decode((run_dir / RUNNER_LOCK).read_bytes(), type=RunnerInfo)
    except (OSError, msgspec.DecodeError, RecursionError):
        return None


def _staging_prefix(run_id: str, runner: RunnerInfo) -> str:
    """``.<run_id>..<pid>-<create time in ms>-``: the creator, judged by `staging_abandoned`."""
    return f".{run_id}{STAGING_MARK}{runner.pid}-{round(runner.create_time * 1000)}-"


# A staging directory whose name does not say who made it (made by an older cub) is taken for
# abandoned only when it has not changed for this long: no creation takes a second.
_UNNAMED_STAGING_AGE_S = 60.0


def staging_abandoned(staging: Path) -> bool:
    """Whether the process creating the run directory ``staging`` is gone (so it never will
    rename it into place). Judged by the pid and start time in its name, never by its lock
    alone: the lock is taken a moment after the directory exists."""
    _, _, creator = staging.name.rpartition(STAGING_MARK)
    pid, _, rest = creator.partition("-")
    started_ms, _, _ = rest.partition("-")
    if pid.isdigit() and started_ms.isdigit():
        return not process_matches(int(pid), int(started_ms) / 1000)
    try:
        age = time.time() - staging.stat().st_mtime
    except OSError:
        return False  # gone already (renamed into place, or removed)
    return age > _UNNAMED_STAGING_AGE_S


def lock_run(run_dir: Path) -> int | None:
    """Take the run's lock, held for as long as the process that owns the run lives.

    The kernel drops it when that process dies, however it dies, so recovery can tell a dead
    runner from a live one without trusting pids. The descriptor is not inherited by agents
    (Python opens it close-on-exec). Returns the descriptor, or None if another process holds
    the lock or the directory is gone (a staging directory just renamed into place, a run
    just pruned): either way not one to take.
    """
    try:
        # Never through a symlink planted in its place: that would create a file elsewhere.
        fd = os.open(run_dir / RUNNER_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock_run(fd: int) -> None:
    os.close(fd)
