"""`cub runs list|show|tail|prune` and `cub status`: reading the records runs left behind."""

from __future__ import annotations

import errno
import functools
import shutil
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from cub.cli.safe_text import agent_line_safe, terminal_safe
from cub.cli.views import (
    event_line,
    fitted_columns,
    print_events,
    print_record,
    print_status,
    summary_header,
    summary_line,
)
from cub.durations import parse_duration
from cub.records.follow import RunFollower
from cub.records.location import runs_dir
from cub.records.reader import (
    RunNotFound,
    did_work,
    is_live,
    list_summaries,
    load_record,
    prune_runs,
    read_events,
    read_run_json,
    resolve_run,
    run_dirs,
    unfinished_run_dirs,
)
from cub.records.report import write_index, write_report
from cub.records.schemas import encode
from cub.run.recover import recover_project
from cub.tasks.ledger import ledgers_hold_claims
from cub.workspace.git import GitError, git
from cub.workspace.root import find_project_root

if TYPE_CHECKING:
    from cub.records.schemas import RunRecord, StatusRecord


def _project_dir() -> Path:
    return find_project_root(Path.cwd()) or Path.cwd()


def _recover(project_dir: Path) -> None:
    """Finalise runs whose runner died, and settle claims runs left, before anything reads
    them."""
    if not unfinished_run_dirs(project_dir) and not ledgers_hold_claims(project_dir):
        return  # every run has its record and no task is claimed: nothing more to import

    for message in recover_project(project_dir):
        print(f"cub: {message}", file=sys.stderr)


def _one_line_errors(command: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """A failing disk (full, read-only, I/O errors) while records are read or recovered is
    said in one line, exit 1: these commands are what people run when something is wrong."""

    def decorate(function: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(function)
        def wrapper(*args: object, **kwargs: object) -> int:
            try:
                return function(*args, **kwargs)
            except BrokenPipeError:
                raise  # the reader went away: not a disk's failure (the entry point's to handle)
            except OSError as exc:
                print(f"cub {command}: error: {_describe(exc)}", file=sys.stderr)
                return 1

        return wrapper

    return decorate


def _describe(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    text = f"{exc.strerror or exc}{where}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{text}: cannot record the runs whose runner died; free some space"
    return text


def _since(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _load(command: str, run_id: str) -> tuple[Path, RunRecord | StatusRecord] | None:
    """The run and its record, or None after saying why there is none."""
    run_dir = _resolve(command, run_id)
    if run_dir is None:
        return None
    record = load_record(run_dir)
    if record is None:
        print(f"cub {command}: error: {run_dir} has no readable record", file=sys.stderr)
        return None
    return run_dir, record


def _resolve(command: str, run_id: str) -> Path | None:
    project_dir = _project_dir()
    _recover(project_dir)
    try:
        return resolve_run(project_dir, run_id)
    except RunNotFound as exc:
        print(f"cub {command}: error: {exc}", file=sys.stderr)
        return None


def _complete_run_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of RUN_ID: `latest` and the recorded run ids, newest names first."""
    names = sorted((d.name for d in run_dirs(_project_dir()) if ".." not in d.name), reverse=True)
    return [name for name in ["latest", *names] if name.startswith(incomplete)]


@click.group("runs")
def runs_group() -> None:
    """List and inspect recorded runs (.cub/runs/)."""


@runs_group.command("list")
@_one_line_errors("runs list")
@click.option("--json", "json_", is_flag=True, help="Print the runs as a JSON array.")
@click.option("--state", help="Only runs in this state (completed, failed, interrupted, ...).")
@click.option("--since", metavar="DURATION", help="Only runs started within this long, e.g. 2d.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N runs.")
@click.option(
    "--worked",
    is_flag=True,
    help="Only runs that did work: no dry runs, rejected commands or parallel children.",
)
def list_command(
    json_: bool, state: str | None, since: str | None, limit: int | None, worked: bool
) -> int:
    """One line per run, newest first (dry runs and rejections included; see --worked)."""
    project_dir = _project_dir()
    _recover(project_dir)
    since_at = _since(since, "--since")
    summaries = list_summaries(project_dir, state=state, since=since_at)
    if worked:
        summaries = [s for s in summaries if did_work(s)]
    summaries = summaries[:limit] if limit is not None else summaries
    if json_:
        sys.stdout.write(msgspec.json.encode(summaries).decode() + "\n")
        return 0
    if not summaries:
        filtered = state is not None or since is not None or worked
        print("no runs match" if filtered else "no runs recorded", file=sys.stderr)
        return 0
    # The terminal's width (or COLUMNS); a pipe gets every column.
    width = shutil.get_terminal_size((200, 24)).columns
    columns = fitted_columns(width, max(len(s.run_id) for s in summaries))
    print(summary_header(columns))
    for summary in summaries:
        print(terminal_safe(summary_line(summary, columns, width)))
    return 0


@runs_group.command("report")
@_one_line_errors("runs report")
@click.argument("run_id", default="latest", shell_complete=_complete_run_id)
@click.option("--open", "open_", is_flag=True, help="Open the page in the web browser.")
@click.option("--index", is_flag=True, help="A page listing every run instead.")
def report_command(run_id: str, open_: bool, index: bool) -> int:
    """Write a run's record as one self-contained HTML page in its directory (or, with
    --index, a page of all runs) and print its path."""
    project_dir = _project_dir()
    if index:
        _recover(project_dir)
        page = write_index(project_dir, runs_dir(project_dir))
    else:
        run_dir = _resolve("runs report", run_id)
        if run_dir is None:
            return 1
        try:
            page = write_report(run_dir, project_dir)
        except FileNotFoundError as exc:
            print(f"cub runs report: error: {exc}", file=sys.stderr)
            return 1
    print(page)
    if open_:
        webbrowser.open(page.as_uri())
    return 0


@runs_group.command("show")
@_one_line_errors("runs show")
@click.argument("run_id", default="latest", shell_complete=_complete_run_id)
@click.option("--json", "json_", is_flag=True, help="Print the record as JSON.")
@click.option("--events", is_flag=True, help="Print the run's event journal too.")
def show_command(run_id: str, json_: bool, events: bool) -> int:
    """Show one run's record (RUN_ID or `latest`): its ending, timeline, attempts, usage."""
    found = _load("runs show", run_id)
    if found is None:
        return 1
    run_dir, record = found
    if json_:
        sys.stdout.write(encode(record).decode())
        return 0
    print_record(record, run_dir)
    if events:
        print_events(read_events(run_dir))
    return 0


@runs_group.command("tail")
@_one_line_errors("runs tail")
@click.argument("run_id", default="latest", shell_complete=_complete_run_id)
@click.option("--interval", type=float, default=0.2, hidden=True)
def tail_command(run_id: str, interval: float) -> int:
    """Follow a run's events and its agent's output until the run ends."""
    run_dir = _resolve("runs tail", run_id)
    if run_dir is None:
        return 1

    def show(lines: Iterator[tuple[str, str]]) -> None:
        for kind, text in lines:
            shown = terminal_safe(event_line(text)) if kind == "event" else agent_line_safe(text)
            print(shown if kind == "event" else f"  │ {shown}", flush=True)

    follower = RunFollower(run_dir)
    while True:
        # The record is looked at before the files are read, so nothing written before
        # run.json (which is written last) can be missed.
        record = follower.final_record()
        if record is not None:
            show(follower.finish())
            print(
                f"run {record.run_id} ended {record.state} (exit {record.exit_code}): "
                f"{terminal_safe(record.reason)}"
            )
            return 0
        show(follower.poll())
        if not is_live(run_dir):
            # Its runner died while we watched: recovery gives the run its record.
            _recover(_project_dir())
            if follower.final_record() is None:
                show(follower.finish())
                print(
                    f"cub runs tail: error: run {run_dir.name} is not running and has no "
                    "readable record",
                    file=sys.stderr,
                )
                return 1
            continue
        time.sleep(interval)


@runs_group.command("prune")
@_one_line_errors("runs prune")
@click.option("--keep", type=click.IntRange(min=0), metavar="N", help="Keep the newest N runs.")
@click.option("--older-than", metavar="DURATION", help="Remove runs started before this, e.g. 30d.")
def prune_command(keep: int | None, older_than: str | None) -> int:
    """Remove old run records, and the branches of those runs that hold no unmerged commit
    (git's own `branch -d` check against the checkout). A live run is never removed."""
    if keep is None and older_than is None:
        print("cub runs prune: error: pass --keep N or --older-than DURATION", file=sys.stderr)
        return 2
    project_dir = _project_dir()
    _recover(project_dir)
    branches = {
        d.name: record.branch
        for d in run_dirs(project_dir)
        if (record := read_run_json(d)) is not None and record.branch
    }
    removed = prune_runs(project_dir, keep=keep, older_than=_since(older_than, "--older-than"))
    kept_by = {branch for run_id, branch in branches.items() if run_id not in removed}
    deleted = [
        branch
        for branch in dict.fromkeys(branches[r] for r in removed if r in branches)
        if branch not in kept_by and _delete_merged_branch(project_dir, branch)
    ]
    print(
        f"removed {len(removed)} run(s)"
        + (f", {len(deleted)} merged branch(es)" if deleted else "")
    )
    return 0


def _delete_merged_branch(project_dir: Path, branch: str) -> bool:
    try:
        git(project_dir, "branch", "-d", "--end-of-options", branch)
    except GitError:
        return False  # unmerged work, checked out somewhere, or already gone: left alone
    return True


@click.command("status")
@_one_line_errors("status")
@click.option("--json", "json_", is_flag=True, help="Print the status as JSON.")
def status_command(json_: bool) -> int:
    """The live run (or the last one): state, task, elapsed time, tokens, cost, budget use."""
    found = _load("status", "latest")
    if found is None:
        return 1
    run_dir, record = found
    if json_:
        sys.stdout.write(encode(record).decode())
        return 0
    print_status(record, run_dir)
    return 0
