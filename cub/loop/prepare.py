"""Preparing a validated run: the adapter, the branch, the pre-loop hooks."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from cub.errors import SetupFailed

if TYPE_CHECKING:
    from cub.agents.registry import HarnessChoice
    from cub.run.driver import Run
    from cub.run.validation import RunPlan


def harness_version(choice: HarnessChoice) -> str | None:
    if choice.name == "command":
        return None
    try:
        out = subprocess.run(
            [choice.program, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0][:200] if out.returncode == 0 and text else None


def prepare_run(run: Run, plan: RunPlan) -> None:
    from cub.loop.branches import branch_name_for
    from cub.loop.run_hooks import RunHooks
    from cub.loop.settings import LoopSettings

    request = plan.request
    if request.sandbox:
        # The agent, the branch and the hooks belong to the run inside the container.
        from cub.modes.sandbox import prepare_sandbox

        prepare_sandbox(run, plan)
        return
    if plan.issue is not None:
        from cub.modes.gh_issue import check_issue_fetched

        check_issue_fetched(run, plan.issue)
    ctx = run.ctx
    assert plan.harness is not None
    from cub.agents.adapters import adapter_for

    run.harness = adapter_for(plan.harness, plan.config)  # extra_args and prices from config
    if ctx.harness is not None:
        ctx.harness.version = harness_version(plan.harness)

    run.work_dir = plan.project_dir
    if plan.git_root is not None:
        wanted = branch_name_for(
            ctx.run_id,
            # A child of a parallel run works on <prefix><child run id>, unique per parent.
            task_id=None if request.parent_run_id else request.task,
            epic=request.epic,
            gh_issue=request.gh_issue,
            issue_slug=plan.issue.title if plan.issue is not None else None,
            prefix=plan.config.branch.prefix,
        )
        if not request.in_checkout:
            # The default (SPEC §10): a worktree and a branch of its own; the user's checkout
            # is never changed by the run.
            _prepare_worktree(run, plan, wanted)
        elif plan.issue is not None:
            from cub.modes.gh_issue import prepare_issue_branch

            prepare_issue_branch(run, plan, wanted)
        else:
            switch_to_run_branch(run, plan, wanted)
    if plan.issue is not None:
        from cub.modes.gh_issue import start_issue_run

        start_issue_run(run, plan.issue)

    settings = LoopSettings.from_config(plan.config, flag_model=request.model)
    run.settings = settings
    run.hooks = RunHooks(
        run,
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
    from cub.modes.worktree import create_worktree, finish_worktree, worktree_path

    assert plan.git_root is not None
    path = worktree_path(plan.project_dir, run.ctx.run_id)
    if plan.request.parent_run_id is None:
        # The checkout the run started from must not move while its agents work elsewhere. (A
        # parallel run's children leave that to the parent, whose merges do move it.)
        from cub.loop.isolation import CheckoutGuard

        run.checkout_guard = CheckoutGuard.watch(plan.git_root)
    created = create_worktree(plan.git_root, path, branch, plan.request.from_branch)
    run.work_dir = path
    if created:
        from cub.git import head_commit

        run.branch_base = head_commit(path)
    run.finishers.append(lambda run, state, code, reason: finish_worktree(run))
    run.ctx.branch = branch
    run.machine.note("worktree", data={"path": str(path), "branch": branch})


def switch_to_run_branch(
    run: Run, plan: RunPlan, wanted: str, protected: list[str] | None = None
) -> None:
    """Put the run on its branch (SPEC §7.6) and journal which one. ``protected``: the
    branches to leave for ``wanted`` (default: config branch.protected)."""
    from cub.loop.branches import prepare_branch

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
