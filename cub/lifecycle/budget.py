"""Budget arithmetic: which limit, if any, has run out."""

from __future__ import annotations

from cub.records.schemas import BudgetUse


def exhausted_while_running(
    budget: BudgetUse,
    elapsed: float,
    run_timeout: float | None,
) -> tuple[str, str] | None:
    """Limits that can run out in the middle of an attempt: tokens, cost, wall time."""
    if budget.tokens_limit is not None and budget.tokens_used >= budget.tokens_limit:
        return "token_budget", (
            f"token budget exhausted: {budget.tokens_used} of {budget.tokens_limit} tokens used"
        )
    if (
        budget.cost_limit is not None
        and budget.cost_usd is not None
        and budget.cost_usd >= budget.cost_limit
    ):
        return "cost_budget", (
            f"cost budget exhausted: ${budget.cost_usd:.4f} of ${budget.cost_limit:.2f} spent"
        )
    if run_timeout is not None and elapsed >= run_timeout:
        return "time_budget", f"run time limit of {run_timeout:g}s reached"
    return None


def exhausted_before_task(
    budget: BudgetUse,
    elapsed: float,
    run_timeout: float | None,
) -> tuple[str, str] | None:
    """Every limit, checked before the next task is claimed."""
    if budget.tasks_limit is not None and budget.tasks_used >= budget.tasks_limit:
        return "task_budget", f"task budget exhausted: {budget.tasks_used} task(s) attempted"
    if budget.iterations_limit is not None and budget.iterations >= budget.iterations_limit:
        return "iteration_budget", (
            f"iteration limit reached: {budget.iterations} of "
            f"{budget.iterations_limit} agent invocations"
        )
    return exhausted_while_running(budget, elapsed, run_timeout)


def fraction_used(budget: BudgetUse) -> float:
    """The largest share used of any token or cost limit (0 when there is none)."""
    shares = [0.0]
    if budget.tokens_limit:
        shares.append(budget.tokens_used / budget.tokens_limit)
    if budget.cost_limit and budget.cost_usd is not None:
        shares.append(budget.cost_usd / budget.cost_limit)
    return max(shares)
