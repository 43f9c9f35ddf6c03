"""A run's lock in the face of run directories that come and go under a scan: a staging
directory renamed into place (a sibling `cub` starting, as each child of `--parallel 8` does)
or a run pruned is simply not one to take, never an error (it once ended a child's recovery
scan with FileNotFoundError and left that child without a record)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cub.records.reader import is_live, run_dirs, runs_dir
from cub.records.redact import Redactor
from cub.records.store import RunStore, lock_run, unlock_run
from cub.recovery.runs import recover_runs
from tests.helpers.cli import make_project, task


def test_a_directory_that_is_gone_is_not_one_to_lock(tmp_path: Path) -> None:
    staging = tmp_path / ".run-x..1-2-ab"
    staging.mkdir()
    os.rename(staging, tmp_path / "run-x")  # renamed into place between listing and locking
    assert lock_run(staging) is None
    assert not is_live(staging)
    (tmp_path / "file").write_text("")
    assert lock_run(tmp_path / "file") is None  # a file where a directory was


def test_a_run_being_made_is_never_taken_by_a_recovery_scan(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task("t1")])
    made: list[RunStore] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def make_runs() -> None:
        try:
            for i in range(150):
                made.append(RunStore.create(project, f"run-{i:03d}", Redactor()))
        except BaseException as exc:  # reported below, with the scan's
            failures.append(exc)
        finally:
            done.set()

    maker = threading.Thread(target=make_runs)
    maker.start()
    scans = 0
    try:
        while not done.is_set() or scans < 3:
            recover_runs(project)  # lists staging directories while they are renamed
            scans += 1
    finally:
        maker.join()
        for store in made:
            assert store.runner_lock is not None
            unlock_run(store.runner_lock)
    assert not failures, failures
    names = {d.name for d in run_dirs(project)}
    assert {f"run-{i:03d}" for i in range(150)} <= names
    # Each was held by its maker throughout: no scan recorded it as a dead run.
    assert not any((runs_dir(project) / f"run-{i:03d}" / "run.json").exists() for i in range(150))
