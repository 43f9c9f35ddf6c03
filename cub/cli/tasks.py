"""`cub tasks list|ready|show|add|close|release`: a small window onto the configured task backend.

Every command returns its exit code (0 ok, 1 error) for `cub.cli.main` to exit with; errors are
printed as one line on stderr.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from cub.cli.safe_text import terminal_safe
from cub.config.load import load_config
from cub.errors import BackendError, CubError, InvalidTaskId, TaskInputError
from cub.records.reader import runner_alive, runs_dir
from cub.records.store import RUNNER_LOCK, check_safe_name
from cub.tasks.backend import open_backend
from cub.tasks.beads import BeadsBackend
from cub.tasks.file_store import FileTaskBackend
from cub.tasks.model import parse_priority
from cub.tasks.selection import explain_empty, ready_tasks
from cub.workspace.root import find_project_root

if TYPE_CHECKING:
    from cub.tasks.backend import TaskBackend
    from cub.tasks.file_store import FileTaskBackend
    from cub.tasks.model import Task

_PROJECT_KEY = "cub.tasks.project_dir"
CLI_RUN_ID = "cli"  # who is recorded as having closed a task by hand
_STATUSES = ("open", "in_progress", "retry", "closed", "failed", "blocked")
_TYPES = ("task", "feature", "bug", "chore", "epic", "gate")


def _reporting(command: Callable[..., int]) -> Callable[..., int]:
    """Turn cub's own errors into one line: 2 for what was asked (an unknown dependency, a
    bad id), 1 for what was found (bad config, bad task file, no such task)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except (TaskInputError, InvalidTaskId) as exc:
            click.echo(terminal_safe(f"cub tasks: {exc}"), err=True)
            return 2
        except (CubError, OSError) as exc:
            click.echo(terminal_safe(f"cub tasks: {exc}"), err=True)
            return 1

    return wrapper


@click.group("tasks")
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Project root (default: the nearest directory above here with .cub/ or .git).",
)
@click.pass_context
def tasks_group(ctx: click.Context, project_dir: Path | None) -> None:
    """List, show, add and close tasks in the project's backlog."""
    if project_dir is None:
        project_dir = find_project_root(Path.cwd()) or Path.cwd()
    ctx.meta[_PROJECT_KEY] = project_dir


def _open_backend(*, by_hand: bool = False) -> TaskBackend:
    project_dir: Path = click.get_current_context().meta[_PROJECT_KEY]
    return open_backend(project_dir, load_config(project_dir).config, by_hand=by_hand)


def _warn_problems(backend: TaskBackend) -> None:
    for problem in backend.problems():
        click.echo(terminal_safe(f"warning: {problem}"), err=True)


def _print_json(tasks: Task | Sequence[Task]) -> None:
    click.echo(msgspec.json.encode(tasks).decode())


def _print_rows(tasks: Sequence[Task]) -> None:
    width = min(max((len(task.id) for task in tasks), default=0), 24)
    for task in tasks:
        labels = f"  [{', '.join(task.labels)}]" if task.labels else ""
        click.echo(
            terminal_safe(
                f"{task.id:<{width}}  {task.status:<11}  {task.priority_name}  "
                f"{task.issue_type:<7}  {task.title}{labels}"
            )
        )


@tasks_group.command("list")
@click.option("--status", type=click.Choice(_STATUSES), default=None, help="Only this status.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON array.")
@_reporting
def list_command(status: str | None, json_: bool) -> int:
    """Every task, in file order."""
    backend = _open_backend()
    tasks = [task for task in backend.load() if status is None or task.status == status]
    _warn_problems(backend)
    if json_:
        _print_json(tasks)
    elif tasks:
        _print_rows(tasks)
    else:
        click.echo("no tasks" + (f" with status {status}" if status else ""), err=True)
    return 0


@tasks_group.command("ready")
@click.option("--epic", "-e", default=None, help="Only children of this epic.")
@click.option("--label", "-l", default=None, help="Only tasks with this label.")
@click.option("--json", "json_", is_flag=True, help="Print a JSON array.")
@_reporting
def ready_command(epic: str | None, label: str | None, json_: bool) -> int:
    """Tasks ready to run, in the order `cub run` would take them."""
    backend = _open_backend()
    tasks = backend.load()
    ready = ready_tasks(tasks, epic=epic, label=label)
    _warn_problems(backend)
    if json_:
        _print_json(ready)
    elif ready:
        _print_rows(ready)
    if not ready:
        click.echo(explain_empty(tasks, epic=epic, label=label)[1], err=json_)
    return 0


@tasks_group.command("show")
@click.argument("task_id")
@click.option("--json", "json_", is_flag=True, help="Print the task as JSON.")
@_reporting
def show_command(task_id: str, json_: bool) -> int:
    """One task in full."""
    backend = _open_backend()
    tasks = backend.load()
    task = next((t for t in tasks if t.id == task_id), None)
    if task is None:
        click.echo(f"cub tasks: no task with id {task_id!r} in {backend.describe()}", err=True)
        return 1
    if json_:
        _print_json(task)
        return 0
    status: dict[str, str] = {t.id: t.status for t in tasks}
    for name, value in _show_fields(task, status):
        click.echo(terminal_safe(f"{name + ':':<14}{value}"))
    for heading, body in _show_blocks(task):
        click.echo(f"{heading}:")
        lines = terminal_safe(body, keep_newlines=True).splitlines()
        click.echo("".join(f"  {line}\n" for line in lines), nl=False)
    return 0


def _show_fields(task: Task, status: dict[str, str]) -> list[tuple[str, str]]:
    deps = ", ".join(f"{dep} ({status.get(dep, 'unknown')})" for dep in task.depends_on)
    fields = [
        ("id", task.id),
        ("title", task.title),
        ("status", task.status),
        ("priority", task.priority_name),
        ("type", task.issue_type),
        ("labels", ", ".join(task.labels)),
        ("depends on", deps),
        ("parent", task.parent or ""),
        ("assignee", task.assignee or ""),
        ("attempts", str(task.attempts)),
        ("created", task.created_at or ""),
        ("updated", task.updated_at or ""),
        ("closed", task.closed_at or ""),
        ("close reason", task.close_reason or ""),
    ]
    return [(name, value) for name, value in fields if value]


def _show_blocks(task: Task) -> list[tuple[str, str]]:
    criteria = task.acceptance_criteria
    if isinstance(criteria, list):
        criteria = "\n".join(f"- {item}" for item in criteria)
    blocks = [
        ("description", task.description),
        ("acceptance criteria", criteria or ""),
        ("notes", task.notes or ""),
    ]
    return [(heading, body) for heading, body in blocks if body.strip()]


@tasks_group.command("add")
@click.argument("title")
@click.option("--description", default="", help="What to do, for the agent.")
@click.option("--priority", default="2", show_default=True, help="0-4 or P0-P4.")
@click.option("--type", "issue_type", type=click.Choice(_TYPES), default="task")
@click.option("--label", "-l", "labels", multiple=True, help="A label (repeatable).")
@click.option(
    "--depends-on", "depends_on", multiple=True, help="An existing task's id (repeatable)."
)
@click.option("--parent", default=None, help="The epic this task belongs to.")
@_reporting
def add_command(
    title: str,
    description: str,
    priority: str,
    issue_type: str,
    labels: tuple[str, ...],
    depends_on: tuple[str, ...],
    parent: str | None,
) -> int:
    """Add an open task; prints its new id."""

    level = _priority(priority)
    if level is None:
        return 2
    backend = _open_backend()
    task = backend.add(
        title,
        description=description,
        priority=level,
        issue_type=issue_type,
        labels=_split(labels),
        depends_on=_split(depends_on),
        parent=parent,
    )
    click.echo(task.id)
    return 0


def _priority(text: str) -> int | None:
    try:
        return parse_priority(int(text) if text.strip().isdigit() else text)
    except ValueError as exc:
        click.echo(f"cub tasks: --priority: {exc}", err=True)
        return None


@tasks_group.command("edit")
@click.argument("task_id")
@click.option("--title", default=None, help="A new title.")
@click.option("--description", default=None, help="A new description.")
@click.option("--priority", default=None, help="0-4 or P0-P4.")
@click.option("--type", "issue_type", type=click.Choice(_TYPES), default=None)
@click.option("--status", type=click.Choice(_STATUSES), default=None)
@click.option("--label", "-l", "labels", multiple=True, help="The labels (replace all).")
@click.option("--depends-on", "depends_on", multiple=True, help="The dependencies (replace all).")
@click.option("--no-depends-on", is_flag=True, help="Remove every dependency.")
@click.option("--parent", default=None, help="The epic it belongs to ('' for none).")
@_reporting
def edit_command(task_id: str, **options: Any) -> int:
    """Change a task, in the task file itself (under the backlog's lock)."""
    fields: dict[str, Any] = {}
    for key in ("title", "description", "status", "issue_type"):
        if options[key] is not None:
            fields[key] = options[key]
    if options["priority"] is not None:
        level = _priority(options["priority"])
        if level is None:
            return 2
        fields["priority"] = level
    if options["labels"]:
        fields["labels"] = _split(options["labels"])
    if options["depends_on"] or options["no_depends_on"]:
        fields["depends_on"] = _split(options["depends_on"])
    if options["parent"] is not None:
        fields["parent"] = options["parent"] or None
    if not fields:
        click.echo("cub tasks: nothing to change (see `cub tasks edit --help`)", err=True)
        return 2
    if fields.get("status") in ("open", "retry"):  # back to work: no owner, no close
        fields.update(assignee=None, closed_at=None, close_reason=None)
    backend = _open_backend(by_hand=True)
    task = _file_backend(backend).edit(task_id, fields)
    click.echo(terminal_safe(f"edited {task.id}: {task.title}"))
    return 0


@tasks_group.command("rm")
@click.argument("task_id")
@_reporting
def rm_command(task_id: str) -> int:
    """Remove a task from the task file (refused while other tasks depend on it or a run
    holds it)."""
    task = _file_backend(_open_backend(by_hand=True)).remove(task_id)
    click.echo(terminal_safe(f"removed {task.id}: {task.title}"))
    return 0


def _file_backend(backend: TaskBackend) -> FileTaskBackend:
    if not isinstance(backend, FileTaskBackend):
        raise BackendError(f"{backend.describe()}: edit tasks with its own tool")
    return backend


def _split(values: Sequence[str]) -> list[str]:
    # Accept both `-l a -l b` and `-l a,b`.
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@tasks_group.command("close")
@click.argument("task_id")
@click.option("--reason", default="closed by hand", show_default=True)
@_reporting
def close_command(task_id: str, reason: str) -> int:
    """Close a task (from any status), in the task file itself."""
    backend = _open_backend(by_hand=True)
    task = backend.close(task_id, CLI_RUN_ID, reason)
    click.echo(terminal_safe(f"closed {task.id}: {task.title}"))
    return 0


@tasks_group.command("reopen")
@click.argument("task_id")
@_reporting
def reopen_command(task_id: str) -> int:
    """Put a task back to open (attempts from zero), in the task file itself: e.g. to have a
    task a run closed or gave up on done again."""
    backend = _open_backend(by_hand=True)
    assert isinstance(backend, FileTaskBackend | BeadsBackend)  # what open_backend gives
    task = backend.reopen(task_id)
    click.echo(terminal_safe(f"reopened {task.id}: {task.title}"))
    return 0


@tasks_group.command("release")
@click.argument("task_id")
@_reporting
def release_command(task_id: str) -> int:
    """Give a claimed task back to the backlog (open), e.g. one a run that ended left behind.

    Refused while the run holding the claim is alive: stop it first (`cub status`)."""
    backend = _open_backend()
    task = backend.get(task_id)
    owner = task.assignee
    if task.status != "in_progress" or owner is None:
        click.echo(f"cub tasks: {task.id} is not claimed (status {task.status})", err=True)
        return 1
    project_dir: Path = click.get_current_context().meta[_PROJECT_KEY]
    if _names_a_live_run(project_dir, owner):
        click.echo(
            f"cub tasks: {task.id} is claimed by run {owner}, which is still running; "
            "stop it first (it releases its claims when it ends)",
            err=True,
        )
        return 1
    # Under the backlog's lock, and only if the same run still holds it.
    if not backend.release(task.id, owner, note=f"released by hand (claimed by {owner})"):
        click.echo(f"cub tasks: {task.id} changed meanwhile; not released", err=True)
        return 1
    click.echo(terminal_safe(f"released {task.id}: {task.title} (was claimed by {owner})"))
    return 0


def _names_a_live_run(project_dir: Path, owner: str) -> bool:
    try:
        check_safe_name(owner, "run id")
    except CubError:
        return False  # not a run's id: nobody cub knows holds it
    run_dir = runs_dir(project_dir) / owner
    return (run_dir / RUNNER_LOCK).is_file() and runner_alive(run_dir)
