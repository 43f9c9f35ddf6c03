"""The exit code of each terminal state (SPEC §2). The CLI exits with what this returns."""

from __future__ import annotations

from cub.chart.definition import (
    BUDGET_EXHAUSTED,
    COMPLETED,
    FAILED,
    FORCE_KILLED,
    INTERRUPTED,
    VALIDATION_REJECTED,
)

EXIT_CODES: dict[str, int] = {
    COMPLETED: 0,
    FAILED: 1,
    VALIDATION_REJECTED: 2,
    BUDGET_EXHAUSTED: 3,
    INTERRUPTED: 130,
    FORCE_KILLED: 137,
}

# An interrupt asked for by SIGTERM or SIGHUP exits like a process killed by SIGTERM would.
_TERM_REASONS = frozenset({"sigterm", "sighup"})


def exit_code_for(state: str, reason_code: str | None) -> int:
    if state == INTERRUPTED and reason_code in _TERM_REASONS:
        return 143
    return EXIT_CODES[state]
