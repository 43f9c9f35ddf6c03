"""The run directory: where a run's records live and the only code that writes them.

.cub/runs/<run_id>/status.json   rewritten at every transition
.cub/runs/<run_id>/events.jsonl  one fsynced line per transition or event
.cub/runs/<run_id>/run.json      the final record, written last
.cub/runs/<run_id>/tasks/<task_id>/{prompt.md,harness.log,task.json}
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from socket import gethostname
from typing import Any

import msgspec

from cub.errors import Rejected
from cub.records.durable import (
    append_line,
    fsync_dir,
    make_private_dir,
    replace_symlink,
    write_atomic,
)
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

RUNS_DIR = Path(".cub") / "runs"

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


def new_run_id(mode: str, name: str | None = None) -> str:
    if name is not None:
        check_safe_name(name, "run name (--name)")
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
        runs = project_dir / RUNS_DIR
        make_private_dir(runs)
        run_dir = runs / run_id
        taken = Rejected("invalid_name", f"a run named {run_id!r} already exists in {runs}")
        if run_dir.exists():
            raise taken
        # The directory is built under a name no run can have (it holds "..") and renamed
        # into place with its runner lock already held, so recovery, which finalises every
        # run whose lock is free, never takes a run being created for a dead one.
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}{STAGING_MARK}", dir=runs))
        lock = lock_run(staging)
        try:
            assert lock is not None  # nobody else knows the staging directory
            os.write(lock, encode(_this_runner()))
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
        replace_symlink(runs / "latest", run_id)
        return store

    # -- records ----------------------------------------------------------------------------

    def _write_json(self, path: Path, record: msgspec.Struct) -> None:
        write_atomic(path, self.redact.bytes(encode(record)))

    def write_status(self, status: StatusRecord) -> None:
        self._write_json(self.run_dir / "status.json", status)

    def write_run(self, record: RunRecord) -> None:
        self._write_json(self.run_dir / "run.json", record)

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
        line = self.redact.bytes(JSON_ENCODER.encode(event))
        try:
            append_line(path, line)
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
        check_safe_name(task_id, "task id")
        path = self.run_dir / "tasks" / task_id
        make_private_dir(path)
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


def _last_seq(events: Path) -> int:
    """The seq of the journal's last whole line, so a reopened journal continues its count."""
    try:
        data = events.read_bytes()
    except FileNotFoundError:
        return 0
    for line in reversed(data.splitlines()):
        try:
            return msgspec.json.decode(line, type=Event).seq
        except msgspec.DecodeError:
            continue
    return 0


RUNNER_LOCK = "runner.lock"
# In the name of a run directory still being created (see `RunStore.create`); never in a run id.
STAGING_MARK = ".."


def _this_runner() -> RunnerInfo:
    import psutil

    pid = os.getpid()
    return RunnerInfo(pid=pid, create_time=psutil.Process(pid).create_time(), host=gethostname())


def read_runner(run_dir: Path) -> RunnerInfo | None:
    """Who created the run, as written in its lock file; None for older runs or a torn write."""
    try:
        return msgspec.json.decode((run_dir / RUNNER_LOCK).read_bytes(), type=RunnerInfo)
    except (OSError, msgspec.DecodeError):
        return None


def lock_run(run_dir: Path) -> int | None:
    """Take the run's lock, held for as long as the process that owns the run lives.

    The kernel drops it when that process dies, however it dies, so recovery can tell a dead
    runner from a live one without trusting pids. The descriptor is not inherited by agents
    (Python opens it close-on-exec). Returns the descriptor, or None if another process holds
    the lock.
    """
    fd = os.open(run_dir / RUNNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock_run(fd: int) -> None:
    os.close(fd)
