"""The few git operations cub needs, through one subprocess helper."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from cub.errors import CubError


class GitError(CubError):
    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def git(
    repo: Path,
    *args: str,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> str:
    """git's output, stripped; ``env``: variables added to cub's own environment."""
    return git_bytes(repo, *args, check=check, timeout=timeout, env=env).decode().strip()


def git_bytes(
    repo: Path,
    *args: str,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> bytes:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=repo,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {' '.join(args)}: {exc}", str(exc)) from exc
    if check and proc.returncode != 0:
        reason = failure_line((proc.stderr or proc.stdout).decode(errors="replace"))
        raise GitError(f"git {' '.join(args)}: {reason}", reason)
    return proc.stdout


def repo_root(path: Path) -> Path | None:
    try:
        out = git(
            path, "rev-parse", "--show-toplevel", "--path-format=absolute", "--git-common-dir"
        ).splitlines()
    except GitError:
        return None
    if not out or not out[0]:
        return None
    root = Path(out[0])
    if len(out) == 2:
        _COMMON_DIRS[root] = Path(out[1])  # asked for anyway, and `common_dir` needs it next
    return root


# Each repository's common git directory, once git has named it: where a repository keeps its
# objects and refs does not move while cub works in it.
_COMMON_DIRS: dict[Path, Path] = {}


def common_dir(repo: Path) -> Path:
    """The common git directory of the repository at ``repo`` (the same for all its
    worktrees); `GitError` if it is not one."""
    known = _COMMON_DIRS.get(repo)
    if known is None:
        known = Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))
        _COMMON_DIRS[repo] = known
    return known


def current_branch(repo: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD."""
    out = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return out or None


def head_commit(repo: Path) -> str | None:
    out = git(repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    return out or None


def head_ids(repo: Path) -> tuple[str, str] | None:
    """HEAD's commit id in full and as git abbreviates it; None without commits."""
    out = git(repo, "show", "-s", "--format=%H %h", "HEAD", "--", check=False).split()
    return (out[0], out[1]) if len(out) == 2 else None


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


def git_dirs(repo: Path) -> tuple[Path, Path] | None:
    """(git dir, common dir) of the repository at ``repo``; they differ in a linked worktree.

    None where the ref files cannot tell HEAD apart (the reftable ref storage): callers then
    ask git every time.
    """
    out = git(
        repo, "rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir", check=False
    ).splitlines()
    if len(out) != 2:
        return None
    git_dir, common_dir = Path(out[0]), Path(out[1])
    if (common_dir / "reftable").exists():
        return None
    return git_dir, common_dir


def dirs_and_head(repo: Path) -> tuple[tuple[Path, Path] | None, tuple[str, str] | None]:
    """`git_dirs` and `head_ids` from one git process."""
    out = git(
        repo,
        "rev-parse",
        "--path-format=absolute",
        "--git-dir",
        "--git-common-dir",
        "HEAD",
        "--short",
        "HEAD",
        check=False,
    ).splitlines()
    dirs = None
    if len(out) >= 2 and not (Path(out[1]) / "reftable").exists():
        dirs = Path(out[0]), Path(out[1])
    # Without commits git stops at HEAD, which it cannot resolve.
    if len(out) == 4 and _HEX.fullmatch(out[2]) and out[2].startswith(out[3]):
        return dirs, (out[2], out[3])
    return dirs, None


_HEX = re.compile(r"[0-9a-f]+")

# What HEAD resolves through: HEAD's text, the loose ref's text, and packed-refs' identity.
HeadStamp = tuple[bytes, bytes | None, tuple[int, int, int, int] | None]


def head_stamp(git_dir: Path, common_dir: Path) -> HeadStamp | None:
    """A fingerprint of the files HEAD resolves through, read without starting git.

    git changes HEAD, a loose ref or packed-refs only by renaming a new file over the old
    one, so while the fingerprint stays the same HEAD names the same commit. A different
    fingerprint only means "ask git"; None means it cannot be had here (ask git too).
    """
    try:
        head = (git_dir / "HEAD").read_bytes()
        if not head.startswith(b"ref: "):
            return head, None, None  # detached: HEAD holds the commit itself
        ref = head[5:].strip().decode()
        try:
            loose = (common_dir / ref).read_bytes()
        except FileNotFoundError:
            loose = None
        if loose is not None and loose.startswith(b"ref: "):
            return None  # a symbolic ref behind HEAD: rare, leave it to git
        packed = None
        if loose is None:
            st = os.stat(common_dir / "packed-refs")
            packed = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return head, loose, packed
    except (OSError, UnicodeDecodeError):
        return None


def stamped_commit(stamp: HeadStamp) -> str | None:
    """The commit id a fingerprint names directly (detached HEAD, or a loose ref), if any."""
    head, loose, _ = stamp
    text = loose if head.startswith(b"ref: ") else head
    if text is None:
        return None
    commit = text.strip().decode("ascii", "replace")
    return commit if len(commit) in (40, 64) and _HEX.fullmatch(commit) else None
