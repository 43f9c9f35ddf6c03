"""Watching the checkout an isolated run started from: its agents must never move it.

A run in a worktree of its own (and every child of a parallel run) promises to leave the
user's checkout alone: its branch, its HEAD commit and its index. An agent that ignores its
working directory (OpenCode follows ``PWD``, a script may ``cd`` anywhere) can still commit
there; that must end as a recorded failure, `isolation_breached`, never as `completed`.

The check costs no git process while nothing changed: HEAD is fingerprinted from the files it
resolves through (``cub.workspace.git.head_stamp``) and the index by its stat. Only when one of them
changed is git asked what HEAD names and what the index holds, because git rewrites the index
to refresh file stat data without changing its content.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cub.workspace.git import GitError, HeadStamp, git, git_dirs, head_stamp


@dataclass
class _Snapshot:
    head_stamp: HeadStamp | None
    head: str  # `symbolic-ref` + commit, as git says
    index_stat: tuple[int, int, int, int] | None
    index_digest: str


@dataclass
class CheckoutGuard:
    """The state of one checkout when the run started, and a check that it still holds."""

    checkout: Path
    _git_dir: Path | None
    _common_dir: Path | None
    _start: _Snapshot

    @classmethod
    def watch(cls, checkout: Path) -> CheckoutGuard | None:
        """A guard over ``checkout``; None when it is not a git checkout git can read."""
        dirs = git_dirs(checkout)
        git_dir, common_dir = dirs if dirs is not None else (None, None)
        try:
            start = _snapshot(checkout, git_dir, common_dir)
        except GitError:
            return None
        return cls(checkout, git_dir, common_dir, start)

    def moved(self) -> str | None:
        """What moved since the start (one sentence), or None when nothing did."""
        start = self._start
        stamp = self._head_stamp()
        index_stat = self._index_stat()
        if stamp is not None and stamp == start.head_stamp and index_stat == start.index_stat:
            return None
        try:
            now = _snapshot(self.checkout, self._git_dir, self._common_dir)
        except GitError as exc:
            return f"the checkout {self.checkout} cannot be read any more: {exc.reason}"
        if now.head != start.head:
            return (
                f"HEAD of the checkout {self.checkout} moved from {start.head} to {now.head} "
                "while the agent worked"
            )
        if now.index_digest != start.index_digest:
            return f"the index of the checkout {self.checkout} changed while the agent worked"
        # Same content, new stat data (git refreshed the index): remember the new stat.
        self._start = now
        return None

    def _head_stamp(self) -> HeadStamp | None:
        if self._git_dir is None or self._common_dir is None:
            return None
        return head_stamp(self._git_dir, self._common_dir)

    def _index_stat(self) -> tuple[int, int, int, int] | None:
        return _index_stat(self._git_dir)


def _snapshot(checkout: Path, git_dir: Path | None, common_dir: Path | None) -> _Snapshot:
    stamp = head_stamp(git_dir, common_dir) if git_dir and common_dir else None
    index_stat = _index_stat(git_dir)
    ref = git(checkout, "symbolic-ref", "-q", "HEAD", check=False)
    commit = git(checkout, "rev-parse", "-q", "--verify", "HEAD", check=False)
    listing = git(checkout, "ls-files", "--stage", "-z", check=False)
    return _Snapshot(
        head_stamp=stamp,
        head=f"{ref or 'detached'}@{commit[:12] or 'no commits'}",
        index_stat=index_stat,
        index_digest=hashlib.sha1(listing.encode()).hexdigest(),
    )


def _index_stat(git_dir: Path | None) -> tuple[int, int, int, int] | None:
    if git_dir is None:
        return None
    try:
        st = os.stat(git_dir / "index")
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
