"""A child run that travels through git: the child of a `--engine swarm` run, on whichever
machine the swarm chose.

Nothing of the parent's disk is there, so the child's workspace is a clone of one ref of a
remote every node can reach (the parent pushes the run branch's head there for each child), and
its results go back the same way once it has ended, however it ended: its branch, and its whole
run directory as a commit on ``refs/cub/records/<run_id>`` (`cub.workspace.records_ref`).
Credentials come as Docker secrets (files named ``cub-env-<NAME>`` under ``/run/secrets``),
never on the command line, in labels or in the service's environment.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import msgspec

from cub.lifecycle.observer import RunObserver
from cub.lifecycle.request import RunRequest
from cub.lifecycle.signals import InterruptWatch
from cub.modes.swarm.contract import SECRET_PREFIX, SECRETS_DIR, USAGE_MARK
from cub.records.location import runs_dir
from cub.records.reader import read_status_json
from cub.run.driver import RunResult, execute_run, reject_invocation
from cub.workspace.git import GitError, branch_exists, git
from cub.workspace.records_ref import commit_directory, records_ref

WORKSPACE = "work"


def secret_env(directory: Path = SECRETS_DIR) -> dict[str, str]:
    """The variables the parent passed as secrets: ``cub-env-NAME`` holds NAME's value."""
    found = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return {}
    for entry in entries:
        if entry.name.startswith(SECRET_PREFIX) and entry.is_file():
            name = entry.name[len(SECRET_PREFIX) :]
            found[name] = entry.read_text(encoding="utf-8").rstrip("\n")
    return found


def execute_remote_child(
    request: RunRequest,
    *,
    argv: list[str],
    cwd: Path,
    observer: RunObserver | None = None,
    watch: InterruptWatch | None = None,
) -> tuple[RunResult, str | None]:
    """Clone, run, push. Returns the run's result and what went wrong pushing it, if anything
    (the parent then finds no record on the remote and says so in the child's place)."""
    assert request.clone_url is not None and request.clone_ref is not None
    os.environ.update(secret_env())
    work = cwd / WORKSPACE
    try:
        _clone(request.clone_url, request.clone_ref, work)
    except GitError as exc:
        # Without a workspace there is no project to hold the run's record here; the line
        # goes to the service's log, and the parent records the child failed.
        result = reject_invocation(argv, cwd, f"cannot clone {request.clone_url}: {exc.reason}")
        return result, f"no workspace: {exc.reason}"
    local = msgspec.structs.replace(request, clone_url=None, clone_ref=None, in_place=True)
    reporter = UsageReporter(runs_dir(work) / (request.name or ""))
    reporter.start()
    try:
        result = execute_run(
            local, argv=argv, cwd=work, env=os.environ, observer=observer, watch=watch
        )
    finally:
        reporter.stop()
    return result, push_results(work, request.clone_url, result)


class UsageReporter:
    """Prints the run's budget use (from its status.json) whenever it changes, at most every
    `REPORT_EVERY_S`, for the parent to read in the service's log."""

    REPORT_EVERY_S = 1.0

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cub-usage", daemon=True)
        self._last: bytes | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 * self.REPORT_EVERY_S)

    def _loop(self) -> None:
        while not self._stop.wait(self.REPORT_EVERY_S):
            status = read_status_json(self.run_dir)
            if status is None:
                continue
            budget = status.budget
            line = msgspec.json.encode(
                {
                    "tokens_used": budget.tokens_used,
                    "cost_usd": budget.cost_usd,
                    "cost_incomplete": budget.cost_incomplete,
                }
            )
            if line != self._last:
                self._last = line
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout.write(f"{USAGE_MARK}{line.decode()}\n")
                    sys.stdout.flush()


def _clone(url: str, ref: str, target: Path) -> None:
    git(target.parent, "init", "--quiet", str(target))
    git(target, "fetch", "--quiet", "--no-tags", url, ref, timeout=600)
    git(target, "checkout", "--quiet", "--detach", "FETCH_HEAD")
    git(target, "remote", "add", "origin", url)


def push_results(work: Path, url: str, result: RunResult) -> str | None:
    """Push the run's branch (if it made one) and its record; the problem, or None."""
    record = result.record
    run_dir = result.run_dir or runs_dir(work) / record.run_id
    try:
        commit = commit_directory(work, run_dir, f"cub: record of run {record.run_id}")
        refspecs = [f"{commit}:{records_ref(record.run_id)}"]
        if record.branch and branch_exists(work, record.branch):
            refspecs.insert(0, f"refs/heads/{record.branch}:refs/heads/{record.branch}")
        git(work, "push", "--quiet", "--atomic", url, *refspecs, timeout=600)
    except GitError as exc:
        print(f"cub: could not push the run's results to {url}: {exc.reason}", file=sys.stderr)
        return exc.reason
    return None
