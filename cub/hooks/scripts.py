"""User hooks: executable files in ``<point>.d/`` directories, run in order around the loop.

Hooks are looked up in two places, each sorted by file name: the user's directory
(``$XDG_CONFIG_HOME/cub/hooks/<point>.d/``, else ``~/.config/cub/hooks/<point>.d/``) first, then
the project's (``<project>/.cub/hooks/<point>.d/``). User hooks run first so that personal
set-up (notifications, environment checks) happens before anything the project asks for.

Each hook runs in its own session, so a timeout can stop the hook and everything it started.
A hook that exits on its own may leave background processes running (a service it started for
the run); only a timeout or an interruption stops its process group.
Nothing here decides what a failure means for the run: the caller reads ``HookRunResult``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from cub.hooks.commands import run_in_group
from cub.records.durable import open_log

HOOK_POINTS: tuple[str, ...] = (
    "pre-loop",
    "pre-task",
    "post-task",
    "on-error",
    "on-budget-warning",
    "post-loop",
)

# Environment variables a hook receives (SPEC §7.5).
ENV_HOOK = "CUB_HOOK"
ENV_RUN_ID = "CUB_RUN_ID"
ENV_RUN_DIR = "CUB_RUN_DIR"
ENV_PROJECT_DIR = "CUB_PROJECT_DIR"
ENV_HARNESS = "CUB_HARNESS"
ENV_TASK_ID = "CUB_TASK_ID"
ENV_TASK_TITLE = "CUB_TASK_TITLE"
ENV_TASK_OUTCOME = "CUB_TASK_OUTCOME"
ENV_EXIT_CODE = "CUB_EXIT_CODE"
ENV_RUN_STATE = "CUB_RUN_STATE"

# Grace between SIGTERM and SIGKILL for a hook that overran its timeout.
# How much of a hook's output is kept in its outcome, and at most how much goes to hooks.log.
OUTPUT_TAIL_CHARS = 2048

HOOKS_LOG = "hooks.log"


class HookOutcome(msgspec.Struct, kw_only=True):
    point: str
    path: str
    # None when the hook could not be started (see ``error``).
    exit_code: int | None
    timed_out: bool = False
    duration_s: float = 0.0
    output_tail: str = ""
    # Why the hook could not be started (exec format error, permission denied).
    error: str | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def failed(self) -> bool:
        return self.timed_out or self.exit_code != 0


class HookRunResult(msgspec.Struct, kw_only=True):
    point: str
    outcomes: list[HookOutcome] = msgspec.field(default_factory=list)
    # Files in a hook directory that were not run because they are not executable.
    skipped: list[str] = msgspec.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(o.failed for o in self.outcomes)

    @property
    def first_failure(self) -> HookOutcome | None:
        return next((o for o in self.outcomes if o.failed), None)


def user_hooks_dir(point: str) -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "cub" / "hooks" / f"{point}.d"


def project_hooks_dir(point: str, project_dir: Path) -> Path:
    return project_dir / ".cub" / "hooks" / f"{point}.d"


def hook_env(
    run_id: str,
    run_dir: Path,
    project_dir: Path,
    harness: str,
    task_id: str | None = None,
    task_title: str | None = None,
    outcome: str | None = None,
    exit_code: int | None = None,
    run_state: str | None = None,
) -> dict[str, str]:
    """The ``CUB_*`` variables for one hook invocation; optional ones only when given."""
    env = {
        ENV_RUN_ID: run_id,
        ENV_RUN_DIR: str(run_dir),
        ENV_PROJECT_DIR: str(project_dir),
        ENV_HARNESS: harness,
    }
    optional = {
        ENV_TASK_ID: task_id,
        ENV_TASK_TITLE: task_title,
        ENV_TASK_OUTCOME: outcome,
        ENV_EXIT_CODE: None if exit_code is None else str(exit_code),
        ENV_RUN_STATE: run_state,
    }
    env.update({key: value for key, value in optional.items() if value is not None})
    return env


def find_hooks(point: str, project_dir: Path, user_dir: Path | None = None) -> list[Path]:
    """The executable hooks for ``point``: user hooks first, then project hooks, each sorted."""
    return _discover(point, project_dir, user_dir)[0]


def run_hooks(
    point: str,
    *,
    project_dir: Path,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
    log_dir: Path | None = None,
    redact: Callable[[str], str] = lambda s: s,
    user_dir: Path | None = None,
    stop_on_failure: bool = False,
    interrupted: Callable[[], bool] | None = None,
) -> HookRunResult:
    """Run every hook of ``point`` in order and report how each one went.

    All hooks run even after one fails, unless ``stop_on_failure``. A hook that cannot be
    started is a failed outcome, never an exception. ``user_dir`` overrides the user's hook
    directory for this point (default: see ``user_hooks_dir``). ``interrupted``: when it turns
    true (the run got its first Ctrl+C), the running hook is stopped like a timed-out one and
    no further hook starts.
    """
    hooks, skipped = _discover(point, project_dir, user_dir)
    result = HookRunResult(point=point, skipped=[str(p) for p in skipped])
    if not hooks:
        return result
    full_env = {**os.environ, **env, ENV_HOOK: point}
    for hook in hooks:
        if interrupted is not None and interrupted():
            break
        outcome, output = _run_one(
            point, hook, full_env, timeout, cwd or project_dir, redact, interrupted
        )
        result.outcomes.append(outcome)
        if log_dir is not None:
            _append_log(log_dir, outcome, output)
        if stop_on_failure and outcome.failed:
            break
    return result


def _discover(
    point: str, project_dir: Path, user_dir: Path | None
) -> tuple[list[Path], list[Path]]:
    if point not in HOOK_POINTS:
        raise ValueError(f"unknown hook point {point!r} (known: {', '.join(HOOK_POINTS)})")
    runnable: list[Path] = []
    skipped: list[Path] = []
    for directory in (user_dir or user_hooks_dir(point), project_hooks_dir(point, project_dir)):
        if not directory.is_dir():
            continue
        # Dotfiles (.gitkeep, editor swap files) and subdirectories are not hooks.
        candidates = [p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file()]
        for path in sorted(candidates, key=lambda p: p.name):
            (runnable if os.access(path, os.X_OK) else skipped).append(path)
    return runnable, skipped


def _run_one(
    point: str,
    hook: Path,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path,
    redact: Callable[[str], str],
    interrupted: Callable[[], bool] | None = None,
) -> tuple[HookOutcome, str]:
    started = time.monotonic()
    try:
        done = run_in_group([str(hook)], cwd=cwd, env=env, timeout=timeout, interrupted=interrupted)
    except OSError as exc:
        message = f"cannot run hook: {exc}"
        outcome = HookOutcome(
            point=point,
            path=str(hook),
            exit_code=None,
            duration_s=round(time.monotonic() - started, 3),
            output_tail=message,
            error=str(exc),
        )
        return outcome, message
    output = redact(done.output)
    outcome = HookOutcome(
        point=point,
        path=str(hook),
        exit_code=done.exit_code,
        timed_out=done.timed_out,
        duration_s=round(done.duration_s, 3),
        output_tail=output[-OUTPUT_TAIL_CHARS:],
    )
    return outcome, output


def _append_log(log_dir: Path, outcome: HookOutcome, output: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = f"exit={outcome.exit_code}"
    if outcome.timed_out:
        status += " (timed out)"
    elif outcome.error is not None:
        status += " (could not start)"
    header = (
        f"=== {stamp} {outcome.point} {outcome.name} {status} "
        f"duration={outcome.duration_s:.2f}s ===\n"
    )
    if output and not output.endswith("\n"):
        output += "\n"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(open_log(log_dir / HOOKS_LOG), "a", encoding="utf-8") as log:
        log.write(header + output)
