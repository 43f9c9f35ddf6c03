"""Time loading and selecting on a 10,000-task backlog (the target: well under 100 ms).

    python tools/bench/bench_selection.py [--tasks N] [--repeat R]

Generates a JSONL task file in a temporary directory, with dependency chains (each task waits
on the one before it within a chain of 10), labels and mixed priorities/statuses, then reports
the best of R runs of `load()` (on a new backend each time, as a new `cub` process would:
a backend keeps the document it parsed), `ready_tasks()` and both together.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cub.tasks.jsonl import JsonlBackend
from cub.tasks.model import Task
from cub.tasks.selection import explain_empty, ready_tasks

CHAIN = 10


def generate(path: Path, count: int) -> None:
    path.write_bytes(b"\n".join(msgspec.json.encode(task) for task in backlog(count)) + b"\n")


def backlog(count: int) -> list[dict[str, object]]:
    """``count`` tasks: chains of 10, a fifth closed, every 13th a retry, mixed priorities."""
    tasks = []
    for i in range(count):
        task = {
            "id": f"cub-{i}",
            "title": f"Task number {i}",
            "description": "Implement the thing, then test the thing. " * 3,
            "status": "closed" if i < count // 5 else ("retry" if i % 13 == 0 else "open"),
            "priority": f"P{i % 5}" if i % 2 else i % 5,
            "issue_type": "task",
            "labels": ["backend" if i % 3 else "frontend", f"area-{i % 11}"],
            "parent": f"epic-{i // 500}",
            "created_at": "2025-01-01T00:00:00+00:00",
            "x_unknown": {"kept": True},
        }
        if i % CHAIN:
            key = "dependsOn" if i % 2 else "depends_on"
            task[key] = [f"cub-{i - 1}"]
        tasks.append(task)
    return tasks


def best_of(repeat: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / ".cub" / "tasks.jsonl"
        path.parent.mkdir()
        generate(path, args.tasks)
        tasks = JsonlBackend(path, root).load()
        ready = ready_tasks(tasks)

        # A new backend each time: a backend keeps the document it parsed (keyed by the file's
        # identity), so a second load() on the same one would time the cache.
        def load() -> list[Task]:
            return JsonlBackend(path, root).load()

        load_ms = best_of(args.repeat, load)
        select_ms = best_of(args.repeat, lambda: ready_tasks(tasks))
        filtered_ms = best_of(args.repeat, lambda: ready_tasks(tasks, label="area-3"))
        both_ms = best_of(args.repeat, lambda: ready_tasks(load(), label="area-3"))
        explain_ms = best_of(args.repeat, lambda: explain_empty(tasks, label="none"))
        size_kib = path.stat().st_size / 1024
    print(f"tasks: {len(tasks)} ({size_kib:.0f} KiB), ready: {len(ready)}, best of {args.repeat}")
    print(f"load():                     {load_ms:7.1f} ms")
    print(f"ready_tasks():              {select_ms:7.1f} ms")
    print(f"ready_tasks(label=...):     {filtered_ms:7.1f} ms")
    print(f"load() + ready_tasks():     {both_ms:7.1f} ms")
    print(f"explain_empty():            {explain_ms:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
