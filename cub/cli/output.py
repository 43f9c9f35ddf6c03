"""What `cub run` prints: progress while it runs and one summary when it ends."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

import msgspec

if TYPE_CHECKING:
    from cub.records.schemas import TaskAttempt
    from cub.run.driver import RunResult
    from cub.tasks.model import Task


class ConsoleObserver:
    def __init__(self, *, quiet: bool, stream: bool, to_stderr: bool) -> None:
        self.quiet = quiet
        self.stream = stream
        self.out: TextIO = sys.stderr if to_stderr else sys.stdout

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def message(self, text: str) -> None:
        self._say(text)

    def task_started(self, task: Task, attempt: int) -> None:
        suffix = f" (attempt {attempt})" if attempt > 1 else ""
        self._say(f"▶ {task.id}: {task.title}{suffix}")

    def task_finished(self, attempt: TaskAttempt) -> None:
        mark = "✓" if attempt.outcome == "succeeded" else "✗"
        detail = f" — {attempt.stuck_reason}" if attempt.stuck_reason else ""
        self._say(
            f"{mark} {attempt.task_id}: {attempt.outcome} in {attempt.duration_s:.1f}s{detail}"
        )

    def agent_output(self, line: str) -> None:
        if self.stream and not self.quiet:
            print(f"  │ {line}", file=self.out, flush=True)


def _task_row(task: Task) -> dict[str, object]:
    return {
        "id": task.id,
        "title": task.title,
        "priority": task.priority,
        "status": task.status,
        "issue_type": task.issue_type,
        "labels": list(task.labels),
    }


def report_run(result: RunResult, *, json_output: bool, quiet: bool) -> int:
    """Print the run's ending; return its exit code (the CLI exits with it)."""
    record = result.record
    human = sys.stderr if json_output else sys.stdout
    if json_output:
        if result.ready is not None:
            payload = {
                "run_id": record.run_id,
                "state": record.state,
                "ready": [_task_row(t) for t in result.ready],
            }
            sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
        else:
            sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
    if record.state == "validation_rejected":
        print(f"cub run: error: {record.reason}", file=sys.stderr)
        return record.exit_code
    if result.ready is not None and not json_output:
        _print_ready(result.ready, human)
    if not quiet or record.exit_code != 0:
        _print_summary(result, human)
    return record.exit_code


def _print_ready(ready: list[Task], out: TextIO) -> None:
    for task in ready:
        labels = f"  [{', '.join(task.labels)}]" if task.labels else ""
        print(f"P{task.priority}  {task.id}  {task.title}{labels}", file=out)


def _print_summary(result: RunResult, out: TextIO) -> None:
    record = result.record
    tasks = record.tasks
    print(f"cub: {record.state} (exit {record.exit_code}): {record.reason}", file=out)
    if tasks.attempted:
        print(
            f"  tasks: {tasks.succeeded} succeeded, {tasks.failed} failed, "
            f"{tasks.interrupted} interrupted, {tasks.skipped} skipped",
            file=out,
        )
    budget = record.budget
    if budget.tokens_used or budget.cost_usd:
        print(f"  usage: {budget.tokens_used} tokens, ${budget.cost_usd:.4f}", file=out)
    if result.run_dir is not None:
        print(f"  record: {result.run_dir}/run.json", file=out)
