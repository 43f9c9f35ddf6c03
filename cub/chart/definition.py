"""The run lifecycle, declared once, as data.

Everything else derives from this table: the `transitions` machine that drives a run, the
exported diagrams under ``statecharts/``, the exit-path audit, and the generated chart tests.
Adding an edge here adds its test; an edge whose trigger the driver never fires is still drawn,
audited and replayed.
"""

from __future__ import annotations

import msgspec


class Edge(msgspec.Struct, frozen=True):
    """One transition: ``trigger`` moves the run from ``source`` to ``dest``."""

    trigger: str
    source: str
    dest: str
    summary: str
    # The machine words a run ending through this edge may carry in run.json's reason_code.
    reason_codes: tuple[str, ...] = ()


class Chart(msgspec.Struct, frozen=True):
    name: str
    initial: str
    states: tuple[str, ...]
    terminal: tuple[str, ...]
    edges: tuple[Edge, ...]

    def is_terminal(self, state: str) -> bool:
        return state in self.terminal

    def triggers(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for edge in self.edges:
            seen.setdefault(edge.trigger)
        return tuple(seen)


# Terminal states, by the JSON value written to run.json's `state`.
COMPLETED = "completed"
FAILED = "failed"
VALIDATION_REJECTED = "validation_rejected"
BUDGET_EXHAUSTED = "budget_exhausted"
INTERRUPTED = "interrupted"
FORCE_KILLED = "force_killed"

TERMINAL_STATES = (
    COMPLETED,
    FAILED,
    VALIDATION_REJECTED,
    BUDGET_EXHAUSTED,
    INTERRUPTED,
    FORCE_KILLED,
)

# Non-terminal states that every signal, crash and kill edge leaves from.
LIVE_STATES = (
    "created",
    "validating",
    "preparing",
    "selecting",
    "executing",
    "settling",
    # A parent run watching its child runs: parallel workers, or the run inside a sandbox.
    "supervising",
    "stopping",
)


def _everywhere(
    trigger: str,
    dest: str,
    summary: str,
    reason_codes: tuple[str, ...],
    sources: tuple[str, ...] = LIVE_STATES,
) -> tuple[Edge, ...]:
    return tuple(Edge(trigger, s, dest, summary, reason_codes) for s in sources)


_INTERRUPTIBLE = tuple(s for s in LIVE_STATES if s != "stopping")

RUN_CHART = Chart(
    name="run",
    initial="created",
    states=LIVE_STATES + TERMINAL_STATES,
    terminal=TERMINAL_STATES,
    edges=(
        Edge("validate", "created", "validating", "the invocation is parsed; check it"),
        Edge(
            "reject",
            "created",
            VALIDATION_REJECTED,
            "the command line itself is malformed (unknown option, bad value)",
            ("usage_error",),
        ),
        Edge("accept", "validating", "preparing", "flags, config and task file are valid"),
        Edge(
            "reject",
            "validating",
            VALIDATION_REJECTED,
            "the invocation is refused before any work",
            (
                "flag_conflict",
                "invalid_config",
                "invalid_task_file",
                "invalid_name",
                "invalid_flag",
                "unknown_harness",
                "harness_not_found",
                "missing_harness_command",
                "not_a_git_repo",
                "main_branch",
                "dirty_worktree",
                "no_backend",
                "invalid_direct_input",
                "docker_unavailable",
                "task_not_found",
                "issue_not_found",
                "records_unwritable",
            ),
        ),
        Edge(
            "prepared",
            "preparing",
            "selecting",
            "branch, backend and harness are ready; pre-loop hooks passed",
        ),
        Edge(
            "listed", "preparing", COMPLETED, "dry run: the ready tasks were listed", ("dry_run",)
        ),
        Edge(
            "setup_failed",
            "preparing",
            FAILED,
            "the branch, backend, harness or a fail-fast pre-loop hook failed",
            (
                "branch_failed",
                "worktree_failed",
                "hook_failed",
                "github_failed",
                "sandbox_failed",
            ),
        ),
        Edge("start_task", "selecting", "executing", "a ready task was claimed"),
        Edge(
            "finish",
            "selecting",
            COMPLETED,
            "nothing is left to run and nothing failed",
            (
                "all_tasks_done",
                "no_ready_tasks",
                "filtered_out",
                "task_done",
                "once_done",
                "promise_complete",
            ),
        ),
        Edge(
            "finish_failed",
            "selecting",
            FAILED,
            "nothing is left to run, but some task failed on the way",
            ("tasks_failed",),
        ),
        Edge(
            "exhaust_budget",
            "selecting",
            BUDGET_EXHAUSTED,
            "a budget ran out before the next task",
            ("task_budget", "iteration_budget", "token_budget", "cost_budget", "time_budget"),
        ),
        Edge("attempt_ended", "executing", "settling", "the agent exited or was stopped"),
        Edge(
            "hook_failed",
            "executing",
            FAILED,
            "a fail-fast pre-task hook failed; the task is released",
            ("hook_failed",),
        ),
        Edge("task_succeeded", "settling", "selecting", "the task is closed; go on"),
        Edge(
            "continue_loop",
            "settling",
            "selecting",
            "the attempt failed and the policy goes on (continue, or retry left)",
        ),
        Edge(
            "stop_on_failure",
            "settling",
            FAILED,
            "the attempt failed and the policy stops the run",
            (
                "task_failed",
                "retries_exhausted",
                "agent_stuck",
                "verify_failed",
                "isolation_breached",
            ),
        ),
        Edge(
            "exhaust_budget",
            "settling",
            BUDGET_EXHAUSTED,
            "a token, cost or time budget ran out during the attempt",
            ("token_budget", "cost_budget", "time_budget"),
        ),
        Edge(
            "supervise",
            "preparing",
            "supervising",
            "child runs started (parallel workers, or the run inside a sandbox)",
        ),
        Edge(
            "children_done",
            "supervising",
            COMPLETED,
            "every child run completed and its work was merged back",
            ("all_tasks_done", "no_ready_tasks"),
        ),
        Edge(
            "children_failed",
            "supervising",
            FAILED,
            "a child run failed, its branch did not merge, or the sandbox died",
            (
                "tasks_failed",
                "merge_conflict",
                "sandbox_oom",
                "sandbox_failed",
                "isolation_breached",
            ),
        ),
        Edge(
            "exhaust_budget",
            "supervising",
            BUDGET_EXHAUSTED,
            "the budget shared by the child runs ran out",
            ("token_budget", "cost_budget", "time_budget", "task_budget", "iteration_budget"),
        ),
        *_everywhere(
            "interrupt", "stopping", "SIGINT, SIGTERM or SIGHUP: stop in order", (), _INTERRUPTIBLE
        ),
        Edge(
            "stopped",
            "stopping",
            INTERRUPTED,
            "the agent stopped within the grace period; records written",
            ("sigint", "sigterm", "sighup"),
        ),
        *_everywhere(
            "force_kill",
            FORCE_KILLED,
            "a second interrupt, or recovery found the runner dead",
            ("second_interrupt", "runner_died"),
            _INTERRUPTIBLE,
        ),
        Edge(
            "force_kill",
            "stopping",
            FORCE_KILLED,
            "a second interrupt, the grace period ran out, or recovery found the runner dead",
            # A grace period only runs once the first interrupt has moved the run to stopping.
            ("second_interrupt", "grace_expired", "runner_died"),
        ),
        *_everywhere(
            "backlog_changed",
            FAILED,
            "the task file changed under the run (corrupted, deleted, or the task removed); "
            "claims it can no longer settle are left to recovery",
            ("task_file_changed",),
            ("selecting", "executing", "settling"),
        ),
        *_everywhere(
            "crash", FAILED, "an unexpected exception; traceback recorded", ("exception",)
        ),
    ),
)
