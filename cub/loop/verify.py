"""`loop.verify`: the project's own checks (tests, build) that must pass for a task to count."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cub.hooks.commands import run_in_group
from cub.records.durable import append_line


def run_verify(
    commands: tuple[str, ...],
    work_dir: Path,
    log_path: Path,
    timeout: float,
    redact: Callable[[str], str],
) -> str | None:
    """Run each command in a shell; return None when all pass, else one line saying which
    failed. Output goes to ``log_path``. Each runs as hooks do (`cub.hooks.commands`): in a
    process group of its own, stopped whole on timeout, never waited on for a background
    process it leaves behind."""
    for command in commands:
        done = run_in_group(command, shell=True, cwd=work_dir, timeout=timeout)
        entry = redact(f"$ {command}\n{done.output}[exit {done.exit_code}]")
        append_line(log_path, entry.encode())
        if done.timed_out:
            return f"verify command {command!r} timed out after {timeout:g}s"
        if done.exit_code != 0:
            return f"verify command {command!r} failed with exit code {done.exit_code}"
    return None
