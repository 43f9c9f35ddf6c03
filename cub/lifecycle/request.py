"""What the user asked `cub run` to do: the parsed command line as one typed value."""

from __future__ import annotations

import msgspec


class RunRequest(msgspec.Struct, frozen=True, kw_only=True):
    harness: str | None = None
    harness_cmd: str | None = None
    model: str | None = None
    once: bool = False
    task: str | None = None
    epic: str | None = None
    label: str | None = None
    ready: bool = False
    max_iterations: int | None = None
    budget: float | None = None
    budget_tokens: int | None = None
    budget_tasks: int | None = None
    timeout: str | None = None
    task_timeout: str | None = None
    idle_timeout: str | None = None
    on_failure: str | None = None
    name: str | None = None
    stream: bool = False
    worktree: bool = False
    worktree_keep: bool = False
    in_place: bool = False
    allow_dirty: bool = False
    parallel: int | None = None
    sandbox: bool = False
    sandbox_keep: bool = False
    no_network: bool = False
    engine: str | None = None  # where sandboxed children run: "docker" or "swarm"
    remote: str | None = None  # --engine swarm: the remote the children clone and push to
    direct: str | None = None
    gh_issue: int | None = None
    repo: str | None = None
    main_ok: bool = False
    use_current_branch: bool = False
    from_branch: str | None = None
    no_hooks: bool = False
    no_circuit_breaker: bool = False
    grace: str | None = None
    json: bool = False
    quiet: bool = False
    verbose: bool = False
    # Set by a parallel run on each child run it starts (hidden --parent-run-id).
    parent_run_id: str | None = None
    # A swarm run's child: clone this ref of this remote first, push the results back after
    # (hidden; cub.run.remote).
    clone_url: str | None = None
    clone_ref: str | None = None

    @property
    def in_checkout(self) -> bool:
        """Whether the agent works in the user's checkout rather than a worktree of its own:
        only when asked (``--in-place``, or ``--use-current-branch``, which commits on the
        checked-out branch). Isolation is the default (SPEC §10)."""
        return self.in_place or self.use_current_branch

    @property
    def mode(self) -> str:
        """The run's mode, as recorded in run.json (decided before validation)."""
        if self.direct is not None:
            return "direct"
        if self.gh_issue is not None:
            return "gh-issue"
        if self.sandbox and not (self.parallel is not None and self.engine == "swarm"):
            return "sandbox"
        if self.parallel is not None:
            return "parallel"
        if self.ready:
            return "dry-run"
        return "run"
