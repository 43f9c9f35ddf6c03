"""Where cub keeps a project's state: run records, the backlog's runtime bookkeeping, locks.

Not in the work tree. An agent's everyday commands there — ``git clean -fdx``, ``rm -rf .cub``,
``git add -A``, ``git stash -u`` — would delete, commit or hide whatever cub kept beside the
code. In a git repository the state lives in the repository's common git directory
(``.git/cub/``), which those commands never touch and which every worktree of the repository
shares, so a run in a worktree and ``cub status`` in the main checkout see the same records.
Outside git it lives in the user's state directory (``$XDG_STATE_HOME/cub/projects/``), keyed by
the project's path.

Found by reading ``.git`` files, not by running git: ``cub runs list`` and ``cub status`` must
start fast.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

STATE_DIR_NAME = "cub"
_GITDIR_LINE = re.compile(r"gitdir:\s*(.+)")


def state_dir(project_dir: Path) -> Path:
    """The directory that holds ``project_dir``'s state (it may not exist yet)."""
    project = project_dir.absolute()
    found = _git_common_dir(project)
    if found is not None:
        common, top = found
        base = common / STATE_DIR_NAME
        relative = project.relative_to(top)
        # A project in a subdirectory of a repository keeps its own state there.
        return base if relative == Path(".") else base / "projects" / _escape(relative)
    return _user_state_home() / STATE_DIR_NAME / "projects" / _path_key(project)


def runs_dir(project_dir: Path) -> Path:
    """Where the project's run directories are (``<state>/runs/<run_id>/``)."""
    return state_dir(project_dir) / "runs"


def repository_top(path: Path) -> Path | None:
    """The top of the work tree that holds ``path`` (a linked worktree's own top), if any."""
    found = _git_common_dir(path.absolute())
    return found[1] if found else None


def _git_common_dir(start: Path) -> tuple[Path, Path] | None:
    """(common git directory, top of the work tree) for the repository holding ``start``."""
    for top in (start, *start.parents):
        dotgit = top / ".git"
        if dotgit.is_dir():
            return dotgit, top
        if dotgit.is_file():
            gitdir = _linked_gitdir(dotgit)
            if gitdir is None:
                return None
            commondir = gitdir / "commondir"
            try:
                pointer = commondir.read_text(encoding="utf-8").strip()
            except OSError:
                return gitdir, top  # a submodule's or a separate git dir: its own repository
            common = Path(pointer)
            return (common if common.is_absolute() else (gitdir / common)).resolve(), top
    return None


def _linked_gitdir(dotgit: Path) -> Path | None:
    try:
        match = _GITDIR_LINE.match(dotgit.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return None
    if match is None:
        return None
    gitdir = Path(match.group(1))
    return gitdir if gitdir.is_absolute() else (dotgit.parent / gitdir).resolve()


def _user_state_home() -> Path:
    configured = os.environ.get("XDG_STATE_HOME")
    if configured and os.path.isabs(configured):
        return Path(configured)
    return Path.home() / ".local" / "state"


def _path_key(project: Path) -> str:
    """``<name>-<hash>``: readable in a listing, unique per path."""
    digest = hashlib.sha256(os.fsencode(project)).hexdigest()[:16]
    return f"{_escape(Path(project.name or 'root'))}-{digest}"


def _escape(relative: Path) -> str:
    return "%".join(part.replace("%", "%25") for part in relative.parts)
