"""Merging a parallel run's finished children back into its run branch.

Branches are merged in the parent's working tree with ``git merge --no-ff`` (always a merge
commit), in selection order. A branch that does not merge is left as it is, the merge is
aborted, and its task, which the child had closed, is marked `failed` with the reason in its
notes: the backlog never says done for work that is not on the run branch.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cub.tasks.beads import BeadsBackend
from cub.tasks.file_store import FileTaskBackend
from cub.workspace.branches import branch_name_for
from cub.workspace.git import GitError, failure_line, git

if TYPE_CHECKING:
    from cub.lifecycle.handle import Run
    from cub.modes.parallel.child import Child
    from cub.tasks.backend import TaskBackend

_MERGE_TIMEOUT_S = 300.0


@dataclass
class MergeQueue:
    """The successful children whose branches are not merged yet, and what became of those
    that were."""

    run: Run
    backend: TaskBackend
    work_dir: Path
    branch_prefix: str
    pending: list[Child] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def task_ids(self) -> set[str]:
        return {c.task_id for c in self.pending}

    def merge_in_order(self, live: list[Child]) -> None:
        """Merge what may be merged without breaking selection order: the successful children
        started before every child still running."""
        first_live = min((c.order for c in live), default=None)
        self._merge([c for c in self.pending if first_live is None or c.order < first_live])

    def merge_all(self) -> None:
        self._merge(list(self.pending))

    def _merge(self, children: list[Child]) -> None:
        ctx, machine = self.run.ctx, self.run.machine
        for child in sorted(children, key=lambda c: c.order):
            self.pending.remove(child)
            branch = child.record.branch if child.record is not None else None
            branch = branch or branch_name_for(
                child.run_id,
                task_id=None,
                epic=None,
                gh_issue=None,
                issue_slug=None,
                prefix=self.branch_prefix,
            )
            message = f"cub: merge {child.task_id} from run {child.run_id}"
            problem = merge_branch(self.work_dir, branch, message)
            if problem is None:
                self.merged.append(child.task_id)
                deleted = _delete_merged(self.work_dir, branch)
                machine.note(
                    "child_merged",
                    task_id=child.task_id,
                    data={"branch": branch, "branch_deleted": deleted},
                )
                continue
            self.conflicts.append(child.task_id)
            for entry in ctx.children:
                if entry.run_id == child.run_id:
                    # The child itself completed; what failed is bringing its work back.
                    entry.reason_code = "merge_conflict"
            ctx.tasks.succeeded -= 1
            ctx.tasks.failed += 1
            reason = (
                f"merge_conflict: branch {branch} of run {child.run_id} did not merge into "
                f"{ctx.branch} ({problem}); the branch is kept"
            )
            try:
                marked: bool | str = fail_merged_task(self.backend, child.task_id, reason)
            except Exception as exc:  # the backlog is unreadable now; the record still says so
                marked = f"{type(exc).__name__}: {exc}"
            machine.note(
                "merge_conflict",
                task_id=child.task_id,
                data={
                    "run_id": child.run_id,
                    "branch": branch,
                    "problem": problem,
                    "task_marked_failed": marked,
                },
            )
            self.run.observer.message(f"✗ {child.task_id}: {reason}")


def _delete_merged(work_dir: Path, branch: str) -> bool:
    """Merged, so nothing is lost: a branch per task would only clutter the repository."""
    try:
        git(work_dir, "branch", "-d", "--end-of-options", branch)
    except GitError:
        return False
    return True


def merge_branch(work_dir: Path, branch: str, message: str) -> str | None:
    """Merge ``branch`` into the checked-out run branch (always a merge commit). Returns None,
    or what went wrong after the merge was aborted (the branch itself is left as it is)."""
    done = _git_to_the_end(
        work_dir, "merge", "--no-ff", "--no-edit", "-m", message, "--end-of-options", branch
    )
    if done.returncode == 0:
        return None
    conflicted = git(work_dir, "diff", "--name-only", "--diff-filter=U", check=False)
    _abort_merge(work_dir)
    files = conflicted.split()
    if files:
        more = ", …" if len(files) > 5 else ""
        return f"conflicts in {', '.join(files[:5])}{more}"
    return failure_line(done.stderr or done.stdout)


def _git_to_the_end(work_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in a session of its own, so a Ctrl+C meant for cub never cuts a merge short; if
    cub is force-stopped meanwhile, git still finishes (a merge takes moments) and a merge it
    left in conflict is aborted before the stop carries on, so the tree is never half-merged."""
    proc = subprocess.Popen(
        ["git", *args],
        cwd=work_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=_MERGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return subprocess.CompletedProcess(
            proc.args, 1, out, f"error: git {args[0]} took over {_MERGE_TIMEOUT_S:g}s"
        )
    except BaseException:
        try:
            proc.communicate(timeout=_MERGE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode != 0:
            _abort_merge(work_dir)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _abort_merge(work_dir: Path) -> None:
    with contextlib.suppress(GitError):
        git(work_dir, "merge", "--abort", check=False)


def fail_merged_task(backend: TaskBackend, task_id: str, reason: str) -> bool:
    """Mark a task `failed` after its child closed it but its branch did not merge.

    The backend interface only fails a task still claimed by the failing run, and this one is
    closed by its child, so the backends that can do it have `fail_closed`: closed → failed,
    close fields removed, the reason appended to the notes. Another backend gets the note
    only. Returns whether the status changed.
    """
    if isinstance(backend, (FileTaskBackend, BeadsBackend)):
        return backend.fail_closed(task_id, reason)
    backend.update_notes(task_id, f"failed: {reason}")
    return False
