"""Four real processes race to claim 40 tasks from one file: each is claimed exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cub.tasks.jsonl import JsonlBackend
from tests.tasks.conftest import write_tasks

REPO_ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys, time
from pathlib import Path
from cub.tasks.jsonl import JsonlBackend

tasks_file, project, out, run_id, go = sys.argv[1:6]
backend = JsonlBackend(Path(tasks_file), Path(project))
while not Path(go).exists():  # start together, to make the race real
    time.sleep(0.001)
with open(out, "w") as claimed:
    while (task := backend.claim_next(run_id, epic=None, label=None)) is not None:
        claimed.write(task.id + "\\n")
        claimed.flush()
"""


def test_four_processes_never_claim_a_task_twice(project: Path, tmp_path: Path) -> None:
    tasks_file = write_tasks(
        project / ".cub" / "tasks.jsonl",
        (
            {"id": f"t-{i}", "title": f"task {i}", "priority": i % 5, "keep": {"n": i}}
            for i in range(40)
        ),
    )
    as_written = tasks_file.read_bytes()
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    outputs = [tmp_path / f"worker-{n}.txt" for n in range(4)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(tasks_file),
                str(project),
                str(out),
                f"run-{n}",
                str(go),
            ],
            env=env,
        )
        for n, out in enumerate(outputs)
    ]
    go.touch()
    for worker in workers:
        assert worker.wait(timeout=60) == 0

    claimed = [line for out in outputs for line in out.read_text().split()]
    counts = Counter(claimed)
    assert sorted(counts) == sorted(f"t-{i}" for i in range(40))
    assert set(counts.values()) == {1}

    tasks = JsonlBackend(tasks_file, project).load()  # the file still decodes
    assert len(tasks) == 40
    by_worker = {f"run-{n}": set(out.read_text().split()) for n, out in enumerate(outputs)}
    for task in tasks:
        assert task.status == "in_progress"
        assert task.attempts == 1
        assert task.id in by_worker[task.assignee or ""]  # recorded owner is the claimer
    assert tasks_file.read_bytes() == as_written  # claims are kept in the ledger, not the file
