"""Preparing a validated run: its agent, its worktree or branch, its pre-loop hooks; and, at
its end, removing the worktree (and the branch, if the run committed nothing on it)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from cub.agents.adapters import adapter_for
from cub.errors import SetupFailed
from cub.lifecycle.run_hooks import RunHooks
from cub.lifecycle.settings import LoopSettings
from cub.workspace.branches import branch_name_for, prepare_branch
from cub.workspace.git import GitError, git, head_commit
from cub.workspace.isolation import CheckoutGuard
from cub.workspace.worktree import create_worktree, remove_worktree, worktree_path

if TYPE_CHECKING:
    from pathlib import Path

    from cub.agents.registry import HarnessChoice
    from cub.lifecycle.handle import Run
    from cub.lifecycle.plan import RunPlan


# What is read of `AGENT --version`: its first line is all cub keeps, and a program that prints
# without end must not fill cub's memory (or hold the run up past the timeout).
_VERSION_READ_BYTES = 4096
_VERSION_TIMEOUT_S = 10.0


def harness_version(choice: HarnessChoice) -> str | None:
    if choice.name == "command":
        return None
    try:
        proc = subprocess.Popen(
            [choice.program, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError:
        return None
    deadline = time.monotonic() + _VERSION_TIMEOUT_S
    with proc:
        assert proc.stdout is not None
        head, ended = _read_head(proc.stdout.fileno(), _VERSION_READ_BYTES, deadline)
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic())) if ended else None
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = head.decode("utf-8", "replace").strip().splitlines()
    return lines[0][:200] if code == 0 and lines else None


def _read_head(fd: int, limit: int, deadline: float) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes from ``fd`` before ``deadline``; and whether its end was read."""
    data = b""
    while len(data) < limit and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, limit - len(data))
        if not chunk:
            return data, True
        data += chunk
    return data, False


def prepare_run(run: Run, plan: RunPlan) -> None:
    """Everything a loop run needs before its first task: its agent, its checkout, its hooks."""
    prepare_agent(run, plan)
    prepare_checkout(run, plan)
    prepare_hooks(run, plan)


def prepare_agent(run: Run, plan: RunPlan) -> None:
    assert plan.harness is not None
    run.harness = adapter_for(plan.harness, plan.config)  # extra_args and prices from config
    if run.ctx.harness is not None:
        run.ctx.harness.version = harness_version(plan.harness)


def prepare_checkout(
    run: Run, plan: RunPlan, *, issue_slug: str | None = None, protected: list[str] | None = None
) -> None:
    """Where the agent works: by default a worktree on a branch of the run's own (SPEC §10), the
    user's checkout never changed; with --in-place the checkout, put on the run's branch.
    ``protected``: the branches an in-place run leaves for its own (default: branch.protected)."""
    run.work_dir = plan.project_dir
    if plan.git_root is None:
        return
    request = plan.request
    wanted = branch_name_for(
        run.ctx.run_id,
        # A child of a parallel run works on <prefix><child run id>, unique per parent.
        task_id=None if request.parent_run_id else request.task,
        epic=request.epic,
        gh_issue=request.gh_issue,
        issue_slug=issue_slug,
        prefix=plan.config.branch.prefix,
    )
    if request.in_checkout:
        switch_to_run_branch(run, plan, wanted, protected)
    else:
        _prepare_worktree(run, plan, wanted)


def prepare_hooks(run: Run, plan: RunPlan) -> None:
    """The loop's settings and hooks; the pre-loop hooks fire here."""
    settings = LoopSettings.from_config(plan.config, flag_model=plan.request.model)
    run.settings = settings
    assert run.work_dir is not None
    run.hooks = RunHooks(
        run.machine,
        run.watch,
        enabled=settings.hooks_enabled,
        timeout=settings.hook_timeout,
        work_dir=run.work_dir,
    )
    result = run.hooks.fire("pre-loop", stop_on_failure=settings.hooks_fail_fast)
    if result is not None and result.failed and settings.hooks_fail_fast:
        failure = result.first_failure
        assert failure is not None
        raise SetupFailed(
            "hook_failed",
            f"pre-loop hook {failure.name} failed "
            f"(exit {failure.exit_code}{', timed out' if failure.timed_out else ''})"
            " and hooks.fail_fast is set",
        )


def _prepare_worktree(run: Run, plan: RunPlan, branch: str) -> None:
    assert plan.git_root is not None
    path = worktree_path(plan.project_dir, run.ctx.run_id)
    if plan.request.parent_run_id is None:
        # The checkout the run started from must not move while its agents work elsewhere. (A
        # parallel run's children leave that to the parent, whose merges do move it.)
        run.checkout_guard = CheckoutGuard.watch(plan.git_root)
    created = create_worktree(plan.git_root, path, branch, plan.request.from_branch)
    run.work_dir = path
    if created and plan.request.parent_run_id is None:
        # For `_drop_empty_branch`, which a parallel run's child leaves to its parent.
        run.branch_base = head_commit(path)
    run.finishers.append(lambda run, state, code, reason: _finish_worktree(run))
    run.ctx.branch = branch
    run.machine.note("worktree", data={"path": str(path), "branch": branch})


def switch_to_run_branch(
    run: Run, plan: RunPlan, wanted: str, protected: list[str] | None = None
) -> None:
    """Put the run on its branch (SPEC §7.6) and journal which one. ``protected``: the
    branches to leave for ``wanted`` (default: config branch.protected)."""
    assert plan.git_root is not None
    request = plan.request
    setup = prepare_branch(
        plan.git_root,
        protected=list(plan.config.branch.protected) if protected is None else protected,
        use_current_branch=request.use_current_branch,
        from_branch=request.from_branch,
        wanted=wanted,
    )
    run.ctx.branch = setup.branch
    run.machine.note(
        "branch",
        data={"branch": setup.branch, "created": setup.created, "base_commit": setup.base_commit},
    )


def _finish_worktree(run: Run) -> None:
    """At the end of the run: remove the run's worktree unless --worktree-keep."""
    plan = run.plan
    if plan is None or run.work_dir is None or run.work_dir == plan.project_dir:
        return
    if not run.work_dir.exists():
        return
    if plan.request.worktree_keep:
        run.machine.note("worktree_kept", data={"path": str(run.work_dir)})
        return
    assert plan.git_root is not None

    problem = remove_worktree(plan.git_root, run.work_dir)
    run.machine.note(
        "worktree_removed" if problem is None else "worktree_left",
        data={"path": str(run.work_dir), "problem": problem},
    )
    if problem is None and plan.request.parent_run_id is None:
        _drop_empty_branch(run, plan.git_root)


def _drop_empty_branch(run: Run, repo: Path) -> None:
    """A branch this run made and committed nothing on is only clutter: deleted, and the
    record names no branch. (A parallel child's stays: its parent merges and deletes it.)"""
    branch, base = run.ctx.branch, run.branch_base
    if branch is None or base is None:
        return
    try:
        if git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").strip() != base:
            return
        git(repo, "branch", "-D", "--end-of-options", branch)
    except GitError as exc:
        run.machine.note("branch_kept", data={"branch": branch, "problem": exc.reason})
        return
    run.ctx.branch = None
    run.machine.note("branch_removed", data={"branch": branch, "why": "no commits"})
