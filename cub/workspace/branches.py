"""The branch a run works on: which name it gets, and switching to it before the loop starts.

cub never commits on a protected branch (main/master) unless told to: from a protected branch
or a detached HEAD it creates a branch of its own; from any other branch it stays put. It
never resets an existing branch and never detaches HEAD. Everything here works in a
repository without a remote and in one without any commit yet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import msgspec

from cub.errors import SetupFailed
from cub.workspace.git import (
    GitError,
    HeadStamp,
    branch_exists,
    current_branch,
    dirs_and_head,
    git,
    head_commit,
    head_ids,
    head_stamp,
    stamped_commit,
)

SLUG_MAX_CHARS = 40
_UNSAFE_REF_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class BranchSetup(msgspec.Struct, kw_only=True):
    branch: str
    created: bool
    # HEAD when the run started on ``branch``; None in a repository without commits.
    base_commit: str | None
    # The branch checked out before, None if HEAD was detached.
    previous_branch: str | None


def branch_name_for(
    run_id: str,
    *,
    task_id: str | None,
    epic: str | None,
    gh_issue: int | None,
    issue_slug: str | None,
    prefix: str = "cub/",
) -> str:
    """``task/<id>``, ``feature/<epic>``, ``fix/issue-<N>-<slug>`` or ``<prefix><run_id>``.

    The result is always a valid branch name: characters git refuses are replaced by ``-``.
    """
    if task_id:
        return _ref_name(f"task/{_ref_component(task_id)}")
    if epic:
        return _ref_name(f"feature/{_ref_component(epic)}")
    if gh_issue is not None:
        slug = issue_branch_slug(issue_slug or "")
        return _ref_name(f"fix/issue-{gh_issue}" + (f"-{slug}" if slug else ""))
    return _ref_name(f"{prefix}{run_id}")


def issue_branch_slug(title: str) -> str:
    """Lowercase, runs of non-alphanumerics as one ``-``, at most 40 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower())
    return slug[:SLUG_MAX_CHARS].strip("-")


def prepare_branch(
    repo: Path,
    *,
    protected: Sequence[str],
    use_current_branch: bool,
    from_branch: str | None,
    wanted: str,
) -> BranchSetup:
    """Put the working tree on the branch the run should commit to (SPEC §7.6).

    - ``use_current_branch``: stay where we are (a detached HEAD is refused).
    - ``from_branch``: create ``wanted`` from that ref and switch to it.
    - otherwise: on a protected branch or a detached HEAD, create ``wanted`` from HEAD and
      switch to it; on any other branch, stay.

    If ``wanted`` already exists it is switched to as it is, never reset (``from_branch`` is
    then only checked, not used). Uncommitted changes come along; if git refuses to carry
    them, ``SetupFailed("branch_failed", reason)``.
    """
    previous = current_branch(repo)
    if use_current_branch:
        if previous is None:
            raise SetupFailed(
                "branch_failed",
                "--use-current-branch: HEAD is detached; check out a branch first",
            )
        return BranchSetup(
            branch=previous, created=False, base_commit=head_commit(repo), previous_branch=previous
        )
    start: str | None = None
    if from_branch is not None:
        start = _resolve_commit(repo, from_branch)
    elif previous is not None and previous not in protected:
        return BranchSetup(
            branch=previous, created=False, base_commit=head_commit(repo), previous_branch=previous
        )
    created = not branch_exists(repo, wanted)
    if created:
        _switch(repo, wanted, "--create", wanted, *([start] if start else []))
    else:
        _switch(repo, wanted, wanted)
    return BranchSetup(
        branch=wanted, created=created, base_commit=head_commit(repo), previous_branch=previous
    )


class HeadTracker:
    """HEAD when the current task started, and the commits the task added.

    Asking git costs a process per task. Whether HEAD moved, and most of the time where to,
    can be read from the ref files themselves (`git.head_stamp`); git is asked only when they
    cannot tell.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        # Where HEAD's files are (None: they cannot tell, ask git), learnt at the first start.
        self._dirs: tuple[Path, Path] | None = None
        self._started = False
        self.base: str | None = None  # a full commit id
        self._stamp: HeadStamp | None = None
        self._abbrev = 7  # git's abbreviation length for this repository, once it is known

    def start(self) -> str | None:
        """HEAD now: the base commit of the task about to run (None without commits)."""
        if not self._started:
            self._started = True
            if self._first_start():
                return self.base
        stamp = self._read_stamp()  # before HEAD is read: a move in between means "changed"
        if self.base is None or stamp is None or stamp != self._stamp:
            self.base = self._ask_git()
        self._stamp = stamp
        return self.base

    def _first_start(self) -> bool:
        """Where HEAD's files are and what HEAD names, from one git process. The fingerprint
        is read after it, so it must name the same commit git did; otherwise (HEAD moved in
        between, or the files cannot say) returns False: ask again in the usual order."""
        self._dirs, ids = dirs_and_head(self.repo)
        if ids is None:
            return False
        stamp = self._read_stamp()
        if stamp is None or stamped_commit(stamp) != ids[0]:
            return False
        self.base, self._abbrev, self._stamp = ids[0], len(ids[1]), stamp
        return True

    def commits(self) -> str | None:
        """The task's commits as ``abc1234..def5678``, None if HEAD has not moved since
        `start`; the HEAD found here is the next task's base."""
        if self.base is None:
            return None
        stamp = self._read_stamp()
        if stamp is not None and stamp == self._stamp:
            return None
        head = stamped_commit(stamp) if stamp is not None else None
        base, self.base, self._stamp = self.base, head or self._ask_git(), stamp
        if self.base is None or self.base == base:
            return None
        return f"{base[: self._abbrev]}..{self.base[: self._abbrev]}"

    def _ask_git(self) -> str | None:
        ids = head_ids(self.repo)
        if ids is None:
            return None
        full, short = ids
        self._abbrev = len(short)
        return full

    def _read_stamp(self) -> HeadStamp | None:
        return head_stamp(*self._dirs) if self._dirs is not None else None


def _resolve_commit(repo: Path, ref: str) -> str:
    try:
        return git(
            repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
        )
    except GitError:
        raise SetupFailed(
            "branch_failed", f"--from-branch {ref}: no such branch or commit"
        ) from None


def _switch(repo: Path, branch: str, *args: str) -> None:
    try:
        git(repo, "switch", "--no-guess", *args)
    except GitError as exc:
        raise SetupFailed("branch_failed", f"cannot switch to {branch}: {exc.reason}") from exc


def _ref_component(text: str) -> str:
    """One path component of a branch name, with '/' and anything git refuses made '-'."""
    return _UNSAFE_REF_CHARS.sub("-", text.replace("/", "-"))


def _ref_name(name: str) -> str:
    """Make ``name`` pass ``git check-ref-format --branch``, keeping its '/' structure."""
    parts = []
    for part in name.split("/"):
        part = _UNSAFE_REF_CHARS.sub("-", part)
        part = re.sub(r"\.{2,}", ".", part).lstrip(".-").rstrip(".")
        while part.endswith(".lock"):
            part = part.removesuffix(".lock").rstrip(".")
        if part:
            parts.append(part)
    return "/".join(parts) or "cub-run"
