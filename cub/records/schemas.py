"""Every file cub persists, as a msgspec Struct whose fields match SPEC §4 exactly.

Records are lenient on read (unknown fields are ignored, new fields get defaults) so that runs
written by an older cub stay readable by a newer one; `schema_version` says which shape wrote
them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

SCHEMA_VERSION = 1

Mode = Literal["run", "direct", "gh-issue", "sandbox", "parallel", "dry-run"]
Outcome = Literal["succeeded", "failed", "interrupted", "killed", "timed_out", "stuck"]


class Record(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base for persisted records."""


class ErrorInfo(Record, kw_only=True):
    type: str
    message: str
    traceback: str | None = None


class HarnessInfo(Record, kw_only=True):
    name: str
    version: str | None = None
    model: str | None = None


class TaskCounts(Record, kw_only=True):
    selected: int = 0
    succeeded: int = 0
    failed: int = 0
    interrupted: int = 0
    skipped: int = 0
    # Attempts killed outright (a second interrupt, a grace that ran out, a runner that died).
    killed: int = 0
    attempted: list[str] = msgspec.field(default_factory=list)


class BudgetUse(Record, kw_only=True):
    tokens_used: int = 0
    tokens_limit: int | None = None
    # None while no attempt has reported or been priced at a cost: unknown is not $0.
    cost_usd: float | None = None
    cost_limit: float | None = None
    tasks_used: int = 0
    tasks_limit: int | None = None
    iterations: int = 0
    iterations_limit: int | None = None
    # Some usage had no known cost: cost_usd (when set) covers only the rest.
    cost_incomplete: bool = False

    def add_usage(self, tokens: int, cost: float | None) -> None:
        """Count ``tokens`` and ``cost`` (None: unknown) into the totals."""
        self.tokens_used += tokens
        if cost is not None:
            self.cost_usd = cost if self.cost_usd is None else self.cost_usd + cost
        elif tokens:
            self.cost_incomplete = True

    def add(self, other: BudgetUse) -> None:
        """Another run's (a child's) usage counted into these totals."""
        self.add_usage(other.tokens_used, other.cost_usd)
        self.cost_incomplete = self.cost_incomplete or other.cost_incomplete


class Transition(Record, kw_only=True):
    from_: str = msgspec.field(name="from")
    to: str
    trigger: str
    at: str


class ChildRun(Record, kw_only=True):
    run_id: str
    state: str
    task_id: str | None = None
    exit_code: int | None = None
    reason_code: str | None = None
    # A sandboxed child: the container it ran in (exit_code is the container's).
    container_id: str | None = None
    image: str | None = None
    oom_killed: bool | None = None
    # A child on a swarm: the node it ran on, and why it left no record (if it did not).
    node: str | None = None
    problem: str | None = None


class RunnerInfo(Record, kw_only=True):
    pid: int
    create_time: float
    host: str


class CurrentTask(Record, kw_only=True):
    id: str
    title: str
    attempt: int
    started_at: str
    harness_pid: int | None = None
    harness_pid_create_time: float | None = None


class RunRecord(Record, kw_only=True):
    """run.json: the final record, written once by the terminal callback."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    parent_run_id: str | None = None
    mode: str
    state: str
    exit_code: int
    reason: str
    reason_code: str
    error: ErrorInfo | None = None
    recorded_by: Literal["machine", "recovery"] = "machine"
    started_at: str
    ended_at: str
    duration_s: float
    argv: list[str]
    cwd: str
    pid: int
    host: str
    cub_version: str
    harness: HarnessInfo | None = None
    branch: str | None = None
    tasks: TaskCounts = msgspec.field(default_factory=TaskCounts)
    budget: BudgetUse = msgspec.field(default_factory=BudgetUse)
    history: list[Transition] = msgspec.field(default_factory=list)
    children: list[ChildRun] = msgspec.field(default_factory=list)
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class StatusRecord(Record, kw_only=True):
    """status.json: the live state, rewritten at every transition."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    parent_run_id: str | None = None
    mode: str
    state: str
    started_at: str
    updated_at: str
    argv: list[str]
    cwd: str
    pid: int
    host: str
    cub_version: str
    harness: HarnessInfo | None = None
    branch: str | None = None
    current_task: CurrentTask | None = None
    budget: BudgetUse = msgspec.field(default_factory=BudgetUse)
    tasks: TaskCounts = msgspec.field(default_factory=TaskCounts)
    runner: RunnerInfo
    last_event: str | None = None
    # Tasks this run holds claimed, so recovery can release them if the runner dies.
    claimed_tasks: list[str] = msgspec.field(default_factory=list)


class Usage(Record, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float | None = None
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )


class TaskAttempt(Record, kw_only=True):
    """task.json: one attempt at a task, written when the attempt ends, however it ends."""

    schema_version: int = SCHEMA_VERSION
    task_id: str
    title: str
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    signal: int | None = None
    started_at: str
    ended_at: str
    duration_s: float
    usage: Usage = msgspec.field(default_factory=Usage)
    stuck_reason: str | None = None
    error: ErrorInfo | None = None
    # The model the agent said it used (its own output), else the one cub asked for.
    model: str | None = None


class Event(Record, kw_only=True):
    """One line of events.jsonl."""

    at: str
    seq: int
    kind: str
    state_from: str | None = None
    state_to: str | None = None
    trigger: str | None = None
    task_id: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


JSON_ENCODER = msgspec.json.Encoder()


def encode(record: msgspec.Struct) -> bytes:
    """Pretty JSON with a trailing newline, for files people read."""
    return msgspec.json.format(JSON_ENCODER.encode(record), indent=2) + b"\n"
