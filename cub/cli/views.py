"""How records read on a terminal: run listings, one run in full, the live status."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from cub.cli.safe_text import terminal_safe
from cub.durations import format_duration
from cub.records.reader import task_attempts
from cub.records.schemas import Event, RunRecord

if TYPE_CHECKING:
    from cub.records.reader import RunSummary
    from cub.records.schemas import BudgetUse, Event, RunRecord, StatusRecord, TaskCounts


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"

    return format_duration(round(seconds, 1)) if seconds >= 1 else f"{seconds:.1f}s"


def _clip(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


# (heading, width, align) of `cub runs list`; the reason takes what is left of the line.
_COLUMNS = (
    ("RUN", 26, "<"),
    ("MODE", 9, "<"),
    ("STATE", 19, "<"),
    ("EXIT", 4, ">"),
    ("OK/FAIL", 7, ">"),
    ("TOKENS", 8, ">"),
    ("COST", 8, ">"),
    ("TIME", 7, ">"),
    ("STARTED", 19, "<"),
)
# Given up in this order when the terminal is too narrow for all of them and a reason.
_OPTIONAL = ("MODE", "COST", "TOKENS", "TIME", "STARTED")
_MIN_REASON = 14


def fitted_columns(width: int, longest_id: int = 26) -> list[tuple[str, int, str]]:
    """The columns that fit in ``width`` with room for a reason: run ids whole when they fit
    beside the others, else clipped to 30 characters."""
    columns = list(_COLUMNS)
    full = sum(w + 1 for _, w, _ in columns) + 1 + _MIN_REASON
    id_width = min(48, max(26, longest_id)) if full + longest_id - 26 <= width else 30
    columns[0] = ("RUN", id_width, "<")
    for dropped in _OPTIONAL:
        if sum(w + 1 for _, w, _ in columns) + 1 + _MIN_REASON <= width:
            break
        columns = [c for c in columns if c[0] != dropped]
    return columns


def summary_header(columns: list[tuple[str, int, str]] | None = None) -> str:
    columns = columns if columns is not None else list(_COLUMNS)
    return " ".join(f"{name:{align}{w}}" for name, w, align in columns) + "  REASON"


def cost_text(cost: float | None, incomplete: bool = False) -> str:
    """A cost for people: unknown stays unknown, never $0."""
    if cost is None:
        return "cost unknown"
    return f"${cost:.4f}" + (" + unknown" if incomplete else "")


def summary_line(
    s: RunSummary, columns: list[tuple[str, int, str]] | None = None, width: int = 200
) -> str:
    """One run of `cub runs list`, in ``columns``, the reason clipped to fit ``width``."""
    columns = columns if columns is not None else list(_COLUMNS)
    values = {
        "RUN": _clip(s.run_id, columns[0][1]),
        "MODE": s.mode,
        "STATE": s.state,
        "EXIT": "live" if s.live else str(s.exit_code),
        "OK/FAIL": f"{s.tasks.succeeded}/{s.tasks.failed}",
        "TOKENS": str(s.budget.tokens_used),
        "COST": "-" if s.budget.cost_usd is None else f"{s.budget.cost_usd:.4f}",
        "TIME": _duration(s.duration_s),
        "STARTED": s.started_at[:19].replace("T", " "),
    }
    line = " ".join(f"{values[name]:{align}{w}}" for name, w, align in columns)
    return f"{line}  {_clip(s.reason, max(_MIN_REASON, width - len(line) - 2))}"


def task_counts_line(tasks: TaskCounts) -> str:
    killed = f", {tasks.killed} killed" if tasks.killed else ""
    return (
        f"{tasks.succeeded} succeeded, {tasks.failed} failed, "
        f"{tasks.interrupted} interrupted{killed}, {tasks.skipped} skipped"
    )


def budget_line(budget: BudgetUse) -> str:
    parts = [
        f"{budget.tokens_used} tokens",
        cost_text(budget.cost_usd, budget.cost_incomplete),
        f"{budget.iterations} iteration(s)",
    ]
    limits = [
        ("tokens", budget.tokens_used, budget.tokens_limit),
        ("cost", budget.cost_usd or 0.0, budget.cost_limit),
        ("tasks", budget.tasks_used, budget.tasks_limit),
        ("iterations", budget.iterations, budget.iterations_limit),
    ]
    for name, used, limit in limits:
        if limit:
            parts.append(f"{name} {100 * used / limit:.0f}% of {limit:g}")
    return ", ".join(parts)


def print_record(record: RunRecord | StatusRecord, run_dir: Path) -> None:
    ended = isinstance(record, RunRecord)
    _print(
        f"run       {record.run_id}  ({record.mode})"
        + (f"  child of {record.parent_run_id}" if record.parent_run_id else "")
    )
    if isinstance(record, RunRecord):
        _print(
            f"state     {record.state}  exit {record.exit_code}"
            + ("  (recorded by recovery)" if record.recorded_by == "recovery" else "")
        )
        _print(f"reason    {record.reason}  [{record.reason_code}]")
        if record.error is not None:
            _print(f"error     {record.error.type}: {record.error.message}")
        _print(
            f"time      {record.started_at} → {record.ended_at}  ({_duration(record.duration_s)})"
        )
    else:
        _print(f"state     {record.state}  (live, updated {record.updated_at})")
        _print(f"started   {record.started_at}")
        if record.current_task is not None:
            task = record.current_task
            _print(
                f"running   {task.id} attempt {task.attempt} since {task.started_at}: {task.title}"
            )
    if record.harness is not None:
        _print(
            f"harness   {record.harness.name} {record.harness.version or ''}"
            f"{'  model ' + record.harness.model if record.harness.model else ''}".rstrip()
        )
    if record.branch:
        _print(f"branch    {record.branch}")
    _print(f"tasks     {task_counts_line(record.tasks)}")
    _print(f"usage     {budget_line(record.budget)}")
    attempts = task_attempts(run_dir)
    if attempts:
        _print("attempts")
        for directory, attempt in attempts:
            usage = attempt.usage
            cost = cost_text(usage.cost_usd)
            detail = attempt.stuck_reason or (attempt.error.message if attempt.error else "")
            _print(
                f"  {attempt.task_id} #{attempt.attempt}  {attempt.outcome:<11} "
                f"{_duration(attempt.duration_s):>7}  {usage.total_tokens} tokens  {cost}"
                f"{'  — ' + detail if detail else ''}"
            )
            _print(f"      {directory / 'harness.log'}")
    if ended and record.history:  # type: ignore[union-attr]
        _print("timeline")
        for step in record.history:  # type: ignore[union-attr]
            _print(f"  {step.at[11:23]}  {step.from_:<11} → {step.to:<19} {step.trigger}")
    children = getattr(record, "children", [])
    if children:
        _print("children")
        for child in children:
            node = getattr(child, "node", None)
            problem = getattr(child, "problem", None)
            _print(
                f"  {child.run_id}  {child.state}  exit {child.exit_code}"
                f"{'  task ' + child.task_id if child.task_id else ''}"
                f"{'  on ' + terminal_safe(node) if node else ''}"
                f"{'  (' + terminal_safe(problem) + ')' if problem else ''}"
            )
    _print(f"records   {run_dir}")


def event_line(raw: str) -> str:
    """One journal line (JSON) as people read it; the line itself if it is not an event."""
    try:
        event = msgspec.json.decode(raw, type=Event)
    except (msgspec.DecodeError, RecursionError):
        return raw
    return _format_event(event)


def _format_event(event: Event) -> str:
    at = event.at[11:23]
    task = f" [{event.task_id}]" if event.task_id else ""
    if event.kind == "transition":
        return f"{at}  {event.state_from} → {event.state_to} ({event.trigger}){task}"
    data = " ".join(f"{k}={v}" for k, v in event.data.items()) if event.data else ""
    return f"{at}  {event.kind}{task} {data}".rstrip()


def print_events(events: list[Event]) -> None:
    _print("events")
    for event in events:
        _print(f"  {event.seq:>4} {_format_event(event)}")


def print_status(record: RunRecord | StatusRecord, run_dir: Path) -> None:
    if isinstance(record, RunRecord):
        _print(
            f"last run {record.run_id}: {record.state} (exit {record.exit_code}) — {record.reason}"
        )
        _print(f"  {budget_line(record.budget)}")
        _print(f"  records: {run_dir}")
        return
    started = datetime.fromisoformat(record.started_at)
    elapsed = (datetime.now(UTC) - started).total_seconds()
    _print(f"run {record.run_id}: {record.state}, running for {_duration(elapsed)}")
    task = record.current_task
    if task is not None:
        _print(f"  task {task.id} (attempt {task.attempt}): {task.title}")
    _print(f"  {budget_line(record.budget)}")
    _print(f"  tasks: {record.tasks.succeeded} succeeded, {record.tasks.failed} failed")
    _print(f"  records: {run_dir}")


def _print(text: str = "") -> None:
    """Every line shown here holds text from records (titles, reasons, agents' words)."""
    print(terminal_safe(text))
