"""`cub`'s entry point, and the only place the process exits.

Commands return an exit code; for `cub run` that code comes from the run's terminal record.
Click runs in non-standalone mode so that its usage errors come back here too: for `cub run`
they become validation_rejected runs with a record, like any other bad input.
"""

from __future__ import annotations

# First: a `cub run` is a run from its first instant (cub.cli.early_watch).
import cub.cli.early_watch  # noqa: F401

# isort: split
# After the watch, which must not wait for these imports.
import atexit
import contextlib
import importlib
import os
import sys
from typing import Any, NoReturn

import click

from cub import __version__

# Subcommands are imported only when used, so `cub --version` stays fast.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("cub.cli.run", "run_command", "Run an agent through the task backlog."),
    "runs": ("cub.cli.runs", "runs_group", "List and inspect recorded runs."),
    "status": ("cub.cli.runs", "status_command", "Show the live (or last) run."),
    "statechart": (
        "cub.cli.statechart",
        "statechart_command",
        "Print or export the run state chart.",
    ),
    "tasks": ("cub.cli.tasks", "tasks_group", "List, show, add and close backlog tasks."),
    "init": ("cub.cli.init", "init_command", "Set up .cub/ in this project."),
    "sandbox": ("cub.cli.sandbox", "sandbox_group", "Build the Docker image sandboxed runs use."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module, attr, _ = spec
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Descriptions come from the table above so `cub --help` imports no subcommand.
        rows = [(name, spec[2]) for name, spec in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="cub")
def cli() -> None:
    """cub drives AI coding agents through a task backlog, unattended, and leaves a durable
    record of every run (`cub runs`)."""


def _is_run(args: list[str]) -> bool:
    return bool(args) and args[0] == "run"


def _exit_code(result: Any) -> int:
    if isinstance(result, bool) or result is None:
        return 0
    return result if isinstance(result, int) else 0


def _undecodable(args: list[str]) -> str | None:
    """The first argument that is not valid UTF-8 (it arrives as lone surrogates), shown."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return None


def main(argv: list[str] | None = None, *, forked: bool = False) -> NoReturn:
    """``forked``: this process is a child forked by a parallel run's helper
    (`cub.cli.child_server`), not an interpreter of its own."""
    args = list(sys.argv[1:] if argv is None else argv)
    # `cub run` rejects such an argument itself, with a record (cub.run.validation).
    bad = None if _is_run(args) else _undecodable(args)
    if bad is not None:
        print(f"cub: error: argument {bad!r} is not valid UTF-8", file=sys.stderr)
        sys.exit(2)
    try:
        code = _exit_code(cli.main(args=args, prog_name="cub", standalone_mode=False))
    except click.UsageError as exc:
        if _is_run(args):
            from cub.cli.run import reject_usage  # `cub run`'s module, only when it is used

            code = reject_usage(args, exc)
        else:
            exc.show()
            code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        if _is_run(args):
            from cub.cli.run import record_early_interrupt  # (as above)

            code = record_early_interrupt(args)
        else:
            print("cub: interrupted", file=sys.stderr)
            code = 130
    if forked:
        # No interpreter shutdown: it would tear down, page by page copying it first, the
        # whole heap the child shares with the helper (tens of ms of CPU per child). cub's own
        # files are closed and flushed by now; the standard streams and exit functions are
        # all that shutdown would still do for it.
        _before_exit()
        os._exit(code)
    sys.exit(code)


def _before_exit() -> None:
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken stream: nothing more can reach it.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    atexit._run_exitfuncs()
