"""`cub runs list|show` and `cub status`: reading the records runs left behind."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from cub.records.schemas import RunRecord, StatusRecord


def _project_dir() -> Path:
    from cub.project import find_project_root

    return find_project_root(Path.cwd()) or Path.cwd()


def _recover(project_dir: Path) -> None:
    """Finalise runs whose runner died before anything reads them."""
    from cub.run.recovery import recover_runs

    for message in recover_runs(project_dir):
        print(f"cub: {message}", file=sys.stderr)


@click.group("runs")
def runs_group() -> None:
    """List and inspect recorded runs (.cub/runs/)."""


@runs_group.command("list")
@click.option("--json", "json_", is_flag=True, help="Print the runs as a JSON array.")
def list_command(json_: bool) -> int:
    """One line per run, newest first."""
    import msgspec

    from cub.records.reader import list_records

    project_dir = _project_dir()
    _recover(project_dir)
    records = list_records(project_dir)
    if json_:
        sys.stdout.write(msgspec.json.encode(records).decode() + "\n")
        return 0
    for record in records:
        code = getattr(record, "exit_code", "")
        reason = getattr(record, "reason", "") or ""
        print(f"{record.run_id:<36} {record.mode:<9} {record.state:<20} {code!s:>4}  {reason}")
    if not records:
        print("no runs recorded yet", file=sys.stderr)
    return 0


def _show(command: str, run_id: str, json_: bool) -> int:
    from cub.records.reader import RunNotFound, load_record, resolve_run
    from cub.records.schemas import encode

    project_dir = _project_dir()
    _recover(project_dir)
    try:
        run_dir = resolve_run(project_dir, run_id)
    except RunNotFound as exc:
        print(f"cub {command}: error: {exc}", file=sys.stderr)
        return 1
    record = load_record(run_dir)
    if record is None:
        print(f"cub {command}: error: {run_dir} has no readable record", file=sys.stderr)
        return 1
    if json_:
        sys.stdout.write(encode(record).decode())
    else:
        _print_record(record, run_dir)
    return 0


@runs_group.command("show")
@click.argument("run_id", default="latest")
@click.option("--json", "json_", is_flag=True, help="Print the record as JSON.")
def show_command(run_id: str, json_: bool) -> int:
    """Show one run's record (RUN_ID or `latest`)."""
    return _show("runs show", run_id, json_)


def _print_record(record: RunRecord | StatusRecord, run_dir: Path) -> None:
    from cub.records.schemas import RunRecord

    ended = isinstance(record, RunRecord)
    print(f"run      {record.run_id}  ({record.mode})")
    print(f"state    {record.state}" + (f"  exit {record.exit_code}" if ended else "  (live)"))
    if ended:
        print(f"reason   {record.reason}  [{record.reason_code}]")
    print(f"started  {record.started_at}")
    if ended:
        print(f"ended    {record.ended_at}  ({record.duration_s:.1f}s)")
    tasks = record.tasks
    print(
        f"tasks    {tasks.succeeded} succeeded, {tasks.failed} failed, "
        f"{tasks.interrupted} interrupted; attempted: {', '.join(tasks.attempted) or '-'}"
    )
    budget = record.budget
    print(
        f"usage    {budget.tokens_used} tokens, ${budget.cost_usd:.4f}, "
        f"{budget.iterations} iteration(s)"
    )
    for step in record.history if ended else []:
        print(f"  {step.at}  {step.from_} -> {step.to}  ({step.trigger})")
    print(f"records  {run_dir}")


@click.command("status")
@click.option("--json", "json_", is_flag=True, help="Print the status as JSON.")
def status_command(json_: bool) -> int:
    """The live run, or the last one."""
    return _show("status", "latest", json_)
