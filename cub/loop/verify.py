"""`loop.verify`: the project's own checks (tests, build) that must pass for a task to count."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from cub.records.durable import append_line


def run_verify(
    commands: tuple[str, ...],
    work_dir: Path,
    log_path: Path,
    timeout: float,
    redact: Callable[[str], str],
) -> str | None:
    """Run each command in a shell; return None when all pass, else one line saying which
    failed. Output goes to ``log_path``."""
    for command in commands:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=work_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return f"verify command {command!r} timed out after {timeout:g}s"
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        text = redact(out.decode("utf-8", "replace"))
        append_line(log_path, f"$ {command}\n{text}[exit {proc.returncode}]".encode())
        if proc.returncode != 0:
            return f"verify command {command!r} failed with exit code {proc.returncode}"
    return None
