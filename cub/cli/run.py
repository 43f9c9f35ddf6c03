"""`cub run`: parse the options into a RunRequest, execute the run, report its ending."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from cub.cli.early_watch import EARLY_WATCH


def _request_from(params: dict[str, Any]) -> Any:
    # Here and below, imports wait for the command to run: `cub run --help` stays fast.
    from cub.lifecycle.request import RunRequest

    return RunRequest(**params)


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-H",
    "--harness",
    metavar="NAME",
    help="Agent to run: claude, codex, gemini, opencode or command "
    "(default: config harness.name, else the first found on PATH).",
)
@click.option(
    "--harness-cmd",
    metavar="CMD",
    help="Command line for the `command` harness; the prompt arrives on stdin "
    "and in $CUB_PROMPT_FILE.",
)
@click.option("-m", "--model", metavar="MODEL", help="Model to ask the agent for.")
@click.option("-1", "--once", is_flag=True, help="Run one task, then stop.")
@click.option("-t", "--task", metavar="ID", help="Run just this task.")
@click.option("-e", "--epic", metavar="ID", help="Only tasks whose parent is this epic.")
@click.option("-l", "--label", metavar="LABEL", help="Only tasks with this label.")
@click.option(
    "-r", "--ready", is_flag=True, help="Dry run: list the ready tasks in the order they would run."
)
@click.option(
    "--max-iterations",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N agent invocations (ends budget_exhausted).",
)
@click.option(
    "-b",
    "--budget",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Cost budget in US dollars for the whole run.",
)
@click.option(
    "--budget-tokens",
    type=click.IntRange(min=1),
    metavar="N",
    help="Token budget for the whole run.",
)
@click.option(
    "--budget-tasks",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N tasks have been attempted.",
)
@click.option(
    "--timeout", metavar="DURATION", help="Wall-clock limit for the whole run, e.g. 2h or 90m."
)
@click.option(
    "--task-timeout",
    metavar="DURATION",
    help="Kill an attempt that runs longer than this (default 30m).",
)
@click.option(
    "--idle-timeout",
    metavar="DURATION",
    help="Kill an attempt that prints nothing for this long (default 10m).",
)
@click.option(
    "--on-failure",
    type=click.Choice(["stop", "continue", "retry"]),
    help="After a failed attempt: stop the run, continue with the next task, or "
    "retry it (up to loop.max_attempts).",
)
@click.option(
    "-n",
    "--name",
    metavar="NAME",
    help="Run id to use instead of a generated one ([A-Za-z0-9._-]).",
)
@click.option("-s", "--stream", is_flag=True, help="Show the agent's output as it arrives.")
@click.option(
    "--in-place",
    is_flag=True,
    help="Work in this checkout (on a run branch) instead of a worktree of its own.",
)
@click.option(
    "--allow-dirty",
    is_flag=True,
    help="With --in-place: run even though tracked files have uncommitted changes.",
)
@click.option(
    "--worktree",
    is_flag=True,
    help="Work in .cub/worktrees/<run_id> on a new branch (the default; kept for scripts).",
)
@click.option("--worktree-keep", is_flag=True, help="Keep the run's worktree after the run.")
@click.option(
    "-p",
    "--parallel",
    type=click.IntRange(1, 16),
    metavar="N",
    help="Run up to N independent tasks at once, each in its own worktree.",
)
@click.option("--sandbox", is_flag=True, help="Run inside a Docker container.")
@click.option("--sandbox-keep", is_flag=True, help="Keep the sandbox container afterwards.")
@click.option("--no-network", is_flag=True, help="Cut the sandbox off the network.")
@click.option(
    "--engine",
    type=click.Choice(["docker", "swarm"]),
    help="Where sandboxed children run: one Docker engine, or the services of a Docker Swarm "
    "(--parallel N --sandbox; DOCKER_HOST names a manager).",
)
@click.option(
    "--remote",
    metavar="URL",
    help="With --engine swarm: the git remote every node clones from and pushes to "
    "(default: origin).",
)
@click.option(
    "-d",
    "--direct",
    metavar="TEXT|@FILE|-",
    help="Run the agent once on this prompt (text, @file, or - for stdin); no backlog.",
)
@click.option(
    "--gh-issue",
    type=click.IntRange(min=1),
    metavar="N",
    help="Work on GitHub issue N of this repository.",
)
@click.option(
    "--repo",
    metavar="OWNER/NAME",
    help="GitHub repository for --gh-issue (default: from the origin remote).",
)
@click.option("--main-ok", is_flag=True, help="Allow working directly on main/master.")
@click.option(
    "--use-current-branch",
    is_flag=True,
    help="Commit on the current branch instead of creating one.",
)
@click.option(
    "--from-branch",
    metavar="REF",
    help="Start the run's branch from REF (default: the current HEAD).",
)
@click.option("--no-hooks", is_flag=True, help="Do not run hooks.")
@click.option("--no-circuit-breaker", is_flag=True, help="Disable the task and idle timeouts.")
@click.option(
    "--grace",
    metavar="DURATION",
    help="How long an interrupted agent gets to stop before it is killed (default 10s).",
)
@click.option("--json", "json_", is_flag=True, help="Print the final run record as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the final line.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Also print each journal entry as it is written."
)
@click.option("--parent-run-id", metavar="ID", hidden=True)
@click.option("--clone-url", metavar="URL", hidden=True)
@click.option("--clone-ref", metavar="REF", hidden=True)
def run_command(json_: bool, **params: Any) -> int:
    """Run an agent through the task backlog until it is done, a budget runs out, or you stop
    it. Every run ends in a terminal state recorded under .cub/runs/<run_id>/ and exits with
    its code: 0 completed, 1 failed, 2 rejected, 3 budget exhausted, 130/143 interrupted,
    137 force-killed."""
    from cub.cli.output import ConsoleObserver, report_run  # (not for --help: see above)
    from cub.memory import hold_what_is_built
    from cub.processes import become_subreaper
    from cub.run.driver import execute_run

    hold_what_is_built()  # the backlog, parsed once and held for the run
    # Whatever an agent orphans (even with its environment cleared, out of its session) is
    # re-parented to this process instead of init, where the supervisor finds and ends it.
    become_subreaper()
    request = _request_from({**params, "json": json_})
    # With --json, stdout holds only the record: progress is silent, and --stream output goes
    # to stderr. --quiet silences the stream too.
    observer = ConsoleObserver(
        quiet=request.quiet or json_,
        stream=request.stream and not request.quiet,
        to_stderr=json_,
        verbose=request.verbose,
    )
    if request.clone_url is not None:
        # A child of a swarm run: its workspace and results travel through git.
        from cub.run.remote import execute_remote_child

        result, _ = execute_remote_child(
            request, argv=sys.argv[1:], cwd=Path.cwd(), observer=observer, watch=EARLY_WATCH
        )
    else:
        result = execute_run(
            request, argv=sys.argv[1:], cwd=Path.cwd(), observer=observer, watch=EARLY_WATCH
        )
    return report_run(result, json_output=json_, quiet=request.quiet)


def reject_usage(args: list[str], exc: click.UsageError) -> int:
    """Click refused the command line: record it as a rejected run and say why in one line."""
    from cub.cli.output import report_run  # (imports wait for use: see _request_from)
    from cub.run.driver import reject_invocation

    message = " ".join(exc.format_message().split())
    result = reject_invocation(args, Path.cwd(), f"{message} (see `cub run --help`)")
    return report_run(result, json_output="--json" in args, quiet=False)


def record_early_interrupt(args: list[str]) -> int:
    from cub.cli.output import report_run  # (imports wait for use: see _request_from)
    from cub.run.driver import interrupt_invocation

    result = interrupt_invocation(args, Path.cwd(), signal.SIGINT)
    return report_run(result, json_output="--json" in args, quiet=False)
