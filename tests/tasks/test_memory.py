"""A run's process keeps its parsed backlog out of the garbage collector's passes; any other
process's collector is left as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import gc, json, sys, weakref
from pathlib import Path
from cub import memory
from cub.tasks.jsonl import JsonlBackend

if sys.argv[1] == "run":
    memory.hold_what_is_built()
project = Path(sys.argv[2])

class Cycle:
    pass

garbage = Cycle()
garbage.self = garbage  # a cycle already garbage when the backlog is read
cycle = weakref.ref(garbage)
del garbage
frozen_before = gc.get_freeze_count()
backend = JsonlBackend(project / ".cub" / "tasks.jsonl", project)
tasks = backend.load()
task = backend.claim_next("run-1", epic=None, label=None)  # builds the index
print(json.dumps({
    "tasks": len(tasks),
    "claimed": task.id,
    "frozen": gc.get_freeze_count() - frozen_before,
    "enabled": gc.isenabled(),
    "young": gc.get_threshold()[0],
    "cycle_alive": cycle() is not None,
}))
"""


def probe(tmp_path: Path, role: str) -> dict[str, object]:
    project = tmp_path / "proj"
    (project / ".cub").mkdir(parents=True)
    lines = [
        {"id": f"t-{i}", "title": f"T{i}", "labels": ["x"], "dependsOn": [f"t-{i - 1}"] * (i > 0)}
        for i in range(2000)
    ]
    (project / ".cub" / "tasks.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, role, str(project)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_run_freezes_its_backlog_and_collects_garbage_cycles_first(tmp_path: Path) -> None:
    result = probe(tmp_path, "run")
    assert result["tasks"] == 2000 and result["claimed"] == "t-0"
    # 2000 tasks hold 4000 lists (labels, dependencies) and more: all kept out of later passes.
    assert isinstance(result["frozen"], int) and result["frozen"] >= 4000
    assert result["enabled"] is True
    assert result["young"] == 100_000
    assert result["cycle_alive"] is False  # collected, not frozen for good


def test_any_other_process_keeps_its_collector_as_it_was(tmp_path: Path) -> None:
    result = probe(tmp_path, "library")
    assert result["tasks"] == 2000 and result["claimed"] == "t-0"
    assert result["frozen"] == 0
    assert result["enabled"] is True
    assert result["young"] == 700
