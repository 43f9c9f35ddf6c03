"""Two `cub run` processes on one backlog: every task runs exactly once, no update is lost."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.support import command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_run, read_tasks, start_cub, task

TASKS = 12


@pytest.mark.timeout(60)
def test_two_runs_share_one_backlog(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", [task(f"t{i:02d}") for i in range(TASKS)])
    shared_log = tmp_path / "ran.log"
    agent = write_script(
        tmp_path / "agent",
        f"""
import os, time
time.sleep(0.2)
line = (os.environ["CUB_TASK_ID"] + " " + os.environ["CUB_RUN_ID"] + "\\n").encode()
fd = os.open({str(shared_log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line)
os.close(fd)
""",
    )
    args = ["run", "--use-current-branch", "--main-ok", *command_harness(agent)]
    runs = [start_cub([*args, "--name", name], project) for name in ("left", "right")]
    outputs = [proc.communicate(timeout=50) for proc in runs]
    for proc, (out, err) in zip(runs, outputs, strict=True):
        assert proc.returncode == 0, (out, err)
        assert "Traceback" not in err

    ran = [line.split() for line in shared_log.read_text().splitlines()]
    counts = Counter(task_id for task_id, _ in ran)
    assert sorted(counts) == [f"t{i:02d}" for i in range(TASKS)]
    assert set(counts.values()) == {1}, f"tasks run more than once: {counts}"

    # The task file is whole, every task closed once, by the run that ran it.
    lines = (project / ".cub" / "tasks.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [f"t{i:02d}" for i in range(TASKS)]
    tasks = read_tasks(project)
    assert len(tasks) == TASKS
    ran_by = dict(ran)
    for task_id, entry in tasks.items():
        assert entry["status"] == "closed", entry
        assert entry["attempts"] == 1, entry
        assert ran_by[task_id] in entry["close_reason"]

    records = {name: read_run(project, name) for name in ("left", "right")}
    for name, record in records.items():
        assert (record.state, record.exit_code) == ("completed", 0), record.reason
        assert record.branch == "main"
        assert sorted(record.tasks.attempted) == sorted(t for t, r in ran if r == name)
    assert sum(r.tasks.succeeded for r in records.values()) == TASKS
    assert sum(r.tasks.failed for r in records.values()) == 0
    # Both really worked: the backlog was shared, not drained by whichever started first.
    assert all(r.tasks.succeeded > 0 for r in records.values()), {
        n: r.tasks.succeeded for n, r in records.items()
    }
