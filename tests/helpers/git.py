"""Real git repositories in temporary directories, with a pinned identity."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "cub tests",
    "GIT_AUTHOR_EMAIL": "tests@cub.invalid",
    "GIT_COMMITTER_NAME": "cub tests",
    "GIT_COMMITTER_EMAIL": "tests@cub.invalid",
}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_repo(path: Path, branch: str = "main") -> Path:
    """A git repository with one commit on ``branch``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    (path / "README.md").write_text("test project\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "initial commit")
    return path
