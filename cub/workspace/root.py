"""Where a project starts: the directory cub treats as the project's root."""

from __future__ import annotations

from pathlib import Path


def find_project_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that holds ``.cub/`` or ``.git``."""
    here = start.resolve()
    for candidate in (here, *here.parents):
        # `.git` is a file, not a directory, inside a linked worktree: accept both.
        if (candidate / ".cub").is_dir() or (candidate / ".git").exists():
            return candidate
    return None
