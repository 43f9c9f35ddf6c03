"""What `cub run` prints: progress while it runs and one summary when it ends."""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, TextIO

import msgspec

from cub.cli.safe_text import agent_line_safe, terminal_safe
from cub.cli.views import cost_text, event_line, task_counts_line
from cub.records.reader import task_attempts

if TYPE_CHECKING:
    from cub.records.schemas import TaskAttempt
    from cub.run.driver import RunResult
    from cub.tasks.model import Task
    from cub.tasks.plan import Plan


class ConsoleObserver:
    """Progress on the console. On a terminal, one status line (task, attempt, elapsed, tokens,
    cost) is redrawn in place and cleared before anything else is printed, so it never
    interleaves with --stream output; elsewhere (a pipe, a log file, --quiet) there is none."""

    _REDRAW_EVERY_S = 0.25

    def __init__(
        self, *, quiet: bool, stream: bool, to_stderr: bool, verbose: bool = False
    ) -> None:
        self.quiet = quiet
        self.stream = stream
        self.verbose = verbose and not quiet
        self.out: TextIO = sys.stderr if to_stderr else sys.stdout
        terminal = self.out.isatty()
        self.live = terminal and not quiet
        self.color = terminal and "NO_COLOR" not in os.environ
        self._status_shown = False
        self._last_output = ""  # the agent's last non-blank line, said when it fails
        self._drawn_at = 0.0

    def _clear_status(self) -> None:
        if self._status_shown:
            write_quietly(self.out, "\r\x1b[2K")
            self._status_shown = False

    def _say(self, text: str) -> None:
        if not self.quiet:
            self._clear_status()
            write_quietly(self.out, text + "\n")

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def message(self, text: str) -> None:
        self._say(terminal_safe(text))

    def task_started(self, task: Task, attempt: int) -> None:
        self._last_output = ""
        suffix = f" (attempt {attempt})" if attempt > 1 else ""
        self._say(f"▶ {task.id}: {terminal_safe(task.title)}{suffix}")

    def task_finished(self, attempt: TaskAttempt) -> None:
        ok = attempt.outcome == "succeeded"
        mark = self._paint("✓", "32") if ok else self._paint("✗", "31")
        self._say(
            f"{mark} {attempt.task_id}: {attempt.outcome} in {attempt.duration_s:.1f}s"
            + terminal_safe(self._failure_detail(attempt))
        )

    def _failure_detail(self, attempt: TaskAttempt) -> str:
        """Why, for anything but a success: the agent's reason, or its exit code (or signal)
        and the last thing it printed."""
        if attempt.stuck_reason:
            return f" — {attempt.stuck_reason}"
        if attempt.outcome == "succeeded":
            return ""
        how = (
            f"exit {attempt.exit_code}"
            if attempt.exit_code is not None
            else (f"signal {attempt.signal}" if attempt.signal else "")
        )
        # A JSON event stream's last line is an event, not words: its error says more.
        said = self._last_output if not self._last_output.startswith("{") else ""
        said = said or (attempt.error.message if attempt.error else "")
        parts = [part for part in (how, said[:160]) if part]
        return f" ({parts[0]})" + (f": {parts[1]}" if len(parts) > 1 else "") if parts else ""

    def agent_output(self, text: str) -> None:
        last = _last_line_shown(text)
        if last:
            self._last_output = last
        # Asked for explicitly, so shown even when progress lines are not (--json); the CLI
        # turns it off for --quiet.
        if self.stream:
            self._clear_status()
            lines = text.split("\n")[:-1]
            write_quietly(self.out, "".join(f"  │ {agent_line_safe(line)}\n" for line in lines))

    def journaled(self, line: str) -> None:
        if self.verbose:
            self._say(self._paint(f"  · {terminal_safe(event_line(line))}", "2"))

    def progress(
        self, task_id: str, attempt: int, elapsed: float, tokens: int, cost: float | None
    ) -> None:
        now = time.monotonic()
        if not self.live or now - self._drawn_at < self._REDRAW_EVERY_S:
            return
        self._drawn_at = now
        width = shutil.get_terminal_size((100, 20)).columns
        text = (
            f"… {task_id} attempt {attempt}  {elapsed:5.0f}s  {tokens} tokens  "
            f"{cost_text(cost)}  (Ctrl+C stops, twice kills)"
        )
        write_quietly(self.out, "\r\x1b[2K" + text[: width - 1])
        self._status_shown = True


def _last_line_shown(text: str) -> str:
    """The last line of ``text`` with something on it, stripped ("" if none); only the end of
    the text is looked at (it may be megabytes of output)."""
    end = len(text)
    while end and text[end - 1].isspace():
        end -= 1
    return text[text.rfind("\n", 0, end) + 1 : end].strip()


def _task_row(task: Task) -> dict[str, object]:
    return {
        "id": task.id,
        "title": task.title,
        "priority": task.priority,
        "status": task.status,
        "issue_type": task.issue_type,
        "labels": list(task.labels),
    }


def write_quietly(out: TextIO, text: str) -> None:
    """Write and flush; a reader that went away (``cub run … | head -1``) silences ``out`` for
    good instead of failing: what cub prints never changes how a run ends."""
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        silence(out)


def silence(out: TextIO) -> None:
    """Point ``out``'s descriptor at /dev/null: later writes, and the interpreter's last flush at
    exit, succeed without a reader."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, out.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # no descriptor (a test's StringIO): nothing to silence
        pass


def report_run(result: RunResult, *, json_output: bool, quiet: bool) -> int:
    """Print the run's ending; return its exit code (the CLI exits with it). The record is
    written already: a closed stdout or stderr only stops the printing."""
    try:
        _report(result, json_output=json_output, quiet=quiet)
    except BrokenPipeError:
        silence(sys.stdout)
        silence(sys.stderr)
    return result.record.exit_code


def _report(result: RunResult, *, json_output: bool, quiet: bool) -> None:
    record = result.record
    human = sys.stderr if json_output else sys.stdout
    if json_output:
        if result.ready is not None:
            payload = {
                "run_id": record.run_id,
                "state": record.state,
                "ready": [_task_row(t) for t in result.ready],
                "plan": [
                    {**_task_row(step.task), "ready_now": step.ready_now, "after": step.after}
                    for step in (result.plan.steps if result.plan else [])
                ],
                "waiting": [
                    {**_task_row(w.task), "why": w.why}
                    for w in (result.plan.waiting if result.plan else [])
                ],
            }
            sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
        else:
            sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
    if record.state == "validation_rejected":
        print(f"cub run: error: {terminal_safe(record.reason)}", file=sys.stderr)
        return
    if result.plan is not None and not json_output:
        _print_plan(result.plan, human)
    print(
        f"cub: {record.state} (exit {record.exit_code}): {terminal_safe(record.reason)}", file=human
    )
    if not quiet:
        _print_summary(result, human)
    human.flush()


def _print_plan(plan: Plan, out: TextIO) -> None:
    """The tasks in the order the run takes them, each ready now or after the ones it waits
    for; then what the run would not take, and why."""
    width = min(max((len(step.task.id) for step in plan.steps), default=0), 24)
    lines = []  # written at once: a plan can be 10,000 lines
    for number, step in enumerate(plan.steps, start=1):
        task = step.task
        labels = f"  [{', '.join(task.labels)}]" if task.labels else ""
        when = "ready" if step.ready_now else f"after {', '.join(step.after)}"
        line = f"{number:>3}. P{task.priority}  {task.id:<{width}}  {task.title}{labels}  — {when}"
        lines.append(terminal_safe(line))
    if plan.waiting:
        lines.append("not in this run:")
        lines += [
            terminal_safe(f"     {waiting.task.id}  {waiting.task.title}  — {waiting.why}")
            for waiting in plan.waiting
        ]
    if plan.filtered_out:
        lines.append(f"({plan.filtered_out} open task(s) outside --epic/--label)")
    if lines:
        out.write("\n".join(lines) + "\n")


# Endings after which running `cub run` again picks up where this run stopped.
_RESUMABLE = {"interrupted", "budget_exhausted", "force_killed"}


def _print_summary(result: RunResult, out: TextIO) -> None:
    """What follows the run's one-line ending: attempts, usage, where the record is."""
    record = result.record
    tasks = record.tasks
    if result.run_dir is not None and tasks.attempted:
        for _, attempt in task_attempts(result.run_dir):
            usage = attempt.usage
            print(
                f"  {attempt.task_id:<20} #{attempt.attempt} {attempt.outcome:<11} "
                f"{attempt.duration_s:>7.1f}s {usage.total_tokens:>8} tokens",
                file=out,
            )
        print(f"  tasks: {task_counts_line(tasks)}", file=out)
    budget = record.budget
    if budget.tokens_used or budget.cost_usd:
        cost = cost_text(budget.cost_usd, budget.cost_incomplete)
        print(f"  usage: {budget.tokens_used} tokens, {cost}", file=out)
    if result.run_dir is not None:
        print(f"  record: {result.run_dir}", file=out)
    if record.state in _RESUMABLE and record.mode in ("run", "parallel"):
        print("  resume: run `cub run` again; released tasks are back in the backlog", file=out)
