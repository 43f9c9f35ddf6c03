"""The few git operations cub needs, through one subprocess helper."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cub.errors import CubError


class GitError(CubError):
    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def git(repo: Path, *args: str, check: bool = True, timeout: float = 60) -> str:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {' '.join(args)}: {exc}", str(exc)) from exc
    if check and proc.returncode != 0:
        reason = failure_line(proc.stderr or proc.stdout)
        raise GitError(f"git {' '.join(args)}: {reason}", reason)
    return proc.stdout.strip()


def repo_root(path: Path) -> Path | None:
    try:
        out = git(path, "rev-parse", "--show-toplevel")
    except GitError:
        return None
    return Path(out) if out else None


def current_branch(repo: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD."""
    out = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return out or None


def head_commit(repo: Path) -> str | None:
    out = git(repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    return out or None


def branch_exists(repo: Path, branch: str) -> bool:
    return bool(git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False))


def failure_line(output: str) -> str:
    """git's own reason: its first `error:`/`fatal:` line (the last line is often "Aborting")."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in lines:
        for marker in ("error: ", "fatal: "):
            if line.startswith(marker):
                return line.removeprefix(marker).rstrip(":")
    return lines[0] if lines else "git failed"
