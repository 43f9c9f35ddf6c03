"""What the benchmarks share: an isolated environment and a git project with a backlog."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@cub.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@cub.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def environment(home: Path) -> dict[str, str]:
    """The caller's environment without CUB_* settings, with HOME and git config in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUB_")}
    env.update(GIT_ENV)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    env["GIT_CONFIG_GLOBAL"] = str(home / ".gitconfig")
    return env


def make_project(path: Path, tasks: Iterable[Mapping[str, Any]], env: dict[str, str]) -> None:
    """A git repository with one commit and ``tasks`` as its .cub/tasks.jsonl."""
    path.mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (path / "README.md").write_text("bench project\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "initial commit")
    (path / ".cub").mkdir()
    (path / ".cub" / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
