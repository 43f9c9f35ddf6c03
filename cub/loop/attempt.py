"""One attempt at one task: write the prompt, start the agent, watch it, record the outcome.

While the agent runs, this is where cub reacts to the world: output (usage, stuck signals),
budgets, the circuit breaker, and interrupts. Whatever ends the attempt, task.json is written.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from cub.agents.harness import Harness, OutputParser, combined
from cub.agents.output import Output
from cub.agents.run_marker import agent_env, kill_agents_of
from cub.agents.supervisor import AgentProcess, AgentRequest
from cub.lifecycle.budget import exhausted_while_running
from cub.loop import prompts
from cub.records.schemas import CurrentTask, ErrorInfo, TaskAttempt, Usage
from cub.records.store import utc_now

if TYPE_CHECKING:
    from cub.agents.supervisor import AgentProcess
    from cub.lifecycle.handle import Run
    from cub.lifecycle.settings import LoopSettings
    from cub.tasks.model import Task

_STATUS_EVERY_S = 1.0
_POLL_S = 0.1
# After the agent's tree is gone, how long its last output may take to reach us.
_DRAIN_AFTER_STOP_S = 1.0


@dataclass
class AttemptResult:
    record: TaskAttempt
    # Why cub ended the attempt itself: "interrupt", a budget reason_code, or None.
    stopped_by: str | None = None
    stopped_reason: str | None = None
    promise_complete: bool = False


@dataclass
class _Watch:
    """The attempt's live bookkeeping."""

    agent: AgentProcess
    parser: OutputParser
    harness: Harness
    task_id: str
    base_tokens: int
    base_cost: float | None
    base_cost_incomplete: bool
    status_written_at: float = float("-inf")  # never: the first look writes it
    # The agent reported a (successful or failed) result, then was stopped for lingering.
    stopped_after_result: bool = False


def run_attempt(
    run: Run,
    task: Task,
    attempt: int,
    harness: Harness,
    settings: LoopSettings,
    work_dir: Path,
    backlog: list[Task],
) -> AttemptResult:
    ctx, store = run.ctx, run.ctx.store
    assert store is not None
    archived = store.archive_attempt(task.id) if attempt > 1 else None
    previous_log = archived / "harness.log" if archived is not None else None
    system = prompts.system_prompt(ctx.project_dir or work_dir)
    direct = run.plan.direct_prompt if run.plan is not None else None
    task_text = direct or prompts.task_prompt(task, backlog, previous_log)
    prompt_file = store.write_prompt(task.id, combined(system, task_text))
    invocation = harness.invocation(
        system=system, task=task_text, prompt_file=prompt_file, model=settings.model_for(task)
    )
    env = settings.agent_env(os.environ, run_id=ctx.run_id, task=task)
    env.update(invocation.env)
    env.update(agent_env(store.run_dir))
    # Some agents (OpenCode) take their working directory from PWD rather than from the
    # process: the caller's PWD would send them into the user's checkout.
    env["PWD"] = str(work_dir)

    started_at, t0 = utc_now(), time.monotonic()
    run.observer.task_started(task, attempt)
    current = CurrentTask(id=task.id, title=task.title, attempt=attempt, started_at=started_at)
    ctx.current_task = current
    watch: _Watch | None = None
    recorded = False
    parser = harness.parser()
    try:
        agent = AgentProcess.start(
            AgentRequest(
                argv=invocation.argv,
                cwd=work_dir,
                env=env,
                stdin=invocation.stdin,
                log_path=store.harness_log_path(task.id),
                redact=store.redact,
                log_max_bytes=settings.log_max_bytes,
                looks_for=parser.looks_for,
            )
        )
    except OSError as exc:
        record = _attempt_record(
            task,
            attempt,
            "failed",
            started_at,
            t0,
            Usage(),
            error=ErrorInfo(type=type(exc).__name__, message=f"the agent could not start: {exc}"),
        )
        store.write_attempt(record)
        return AttemptResult(record=record)
    except BaseException:
        # A forced kill while the agent was being started: whatever of it started goes too
        # (it carries the run directory in its environment), and the attempt is recorded.
        kill_agents_of(store.run_dir)
        store.write_attempt(_attempt_record(task, attempt, "killed", started_at, t0, Usage()))
        raise

    try:
        ctx.current_task = msgspec.structs.replace(
            current, harness_pid=agent.pid, harness_pid_create_time=agent.create_time
        )
        run.machine.note(
            "agent_started",
            task_id=task.id,
            data={"pid": agent.pid, "argv": list(invocation.argv), "attempt": attempt},
        )
        # status.json gets the agent's pid from the watch below, as soon as it sees the agent
        # running: an agent already gone by then is not worth a rewrite (the journal has it).
        watch = _Watch(
            agent=agent,
            parser=parser,
            harness=harness,
            task_id=task.id,
            base_tokens=ctx.budget.tokens_used,
            base_cost=ctx.budget.cost_usd,
            base_cost_incomplete=ctx.budget.cost_incomplete,
        )
        result = _supervise(run, watch, settings)
        agent.close()
        _journal_signals(run, watch)
        _journal_log_cut(run, watch, settings)
        _account(run, watch, settings)  # the attempt's final usage, however it ended
        outcome, error = _outcome(result, watch)
        state = watch.parser.state
        model = state.model or settings.model_for(task)
        _note_model(run, state.model)
        record = _attempt_record(
            task,
            attempt,
            outcome,
            started_at,
            t0,
            state.usage,
            returncode=agent.returncode,
            stuck_reason=state.stuck_reason,
            error=error,
            model=model,
        )
        store.write_attempt(record)
        recorded = True
    except BaseException:
        # A forced kill (second signal) or a crash, from the agent's start to its record: the
        # tree goes at once, the attempt is still recorded, then the exception carries on.
        agent.kill_tree()
        if not recorded:
            usage = Usage()
            if watch is not None:
                _take_output(run, watch, settings, agent.remaining(0))
                _journal_signals(run, watch)
                _journal_log_cut(run, watch, settings)
                _account(run, watch, settings)
                usage = watch.parser.state.usage
            ctx.tasks.killed += 1
            store.write_attempt(
                _attempt_record(
                    task, attempt, "killed", started_at, t0, usage, returncode=agent.returncode
                )
            )
        raise
    finally:
        agent.close()
    run.observer.task_finished(record)
    return AttemptResult(
        record=record,
        stopped_by=result[0],
        stopped_reason=result[1],
        promise_complete=state.promise_complete,
    )


def _supervise(run: Run, watch: _Watch, settings: LoopSettings) -> tuple[str | None, str | None]:
    """Wait for the agent, reacting to output, limits and signals.

    Returns (stopped_by, reason): stopped_by is None when the agent ended by itself."""
    agent, state = watch.agent, watch.parser.state
    finish_deadline: float | None = None
    while not agent.finished():
        if time.monotonic() - watch.status_written_at > _STATUS_EVERY_S:
            watch.status_written_at = time.monotonic()
            run.machine.write_status()
        _take_output(run, watch, settings, agent.read(_POLL_S))
        now = time.monotonic()
        if state.result_seen and agent.returncode is None:
            # The agent reported its result; give it a moment to exit on its own.
            finish_deadline = finish_deadline or now + settings.exit_after_result
            if now > finish_deadline:
                _stop(run, watch, settings, signal.SIGTERM, settings.kill_after)
                watch.stopped_after_result = True
                return None, None
        if run.watch.requested:
            stopped = _on_interrupt(run, watch, settings)
            if stopped:
                return "interrupt", None
        # Once the agent has reported its result its work is done: usage in that report that
        # crosses a budget ends the run after this task is settled, never by reopening it.
        budget = (
            None
            if state.result_seen
            else exhausted_while_running(run.ctx.budget, run.ctx.elapsed(), settings.run_timeout)
        )
        if budget is not None:
            _stop(run, watch, settings, watch.harness.stop_signal, settings.grace)
            return budget
        breaker = _circuit_breaker(agent, settings, now)
        if breaker is not None:
            _stop(run, watch, settings, signal.SIGTERM, settings.kill_after)
            return "timed_out", breaker
        current = run.ctx.current_task
        if current is not None:
            use = run.ctx.budget
            run.observer.progress(
                current.id, current.attempt, now - agent.started_at, use.tokens_used, use.cost_usd
            )
    # The agent is gone; what it printed last still counts (its usage, a <stuck> signal).
    _take_output(run, watch, settings, agent.read(0))
    return None, None


def _stop(run: Run, watch: _Watch, settings: LoopSettings, first: int, grace: float) -> None:
    """Stop the agent with the ladder, then count everything it printed while stopping."""
    agent = watch.agent
    # Only the signal the agent is known to handle goes to its main process alone; anything
    # else (SIGTERM kills Claude Code outright, orphaning its tools) goes to the whole tree.
    leader_first = watch.harness.stop_leader_first and first == watch.harness.stop_signal
    agent.stop(first, grace=grace, leader_first=leader_first)
    _journal_signals(run, watch)
    _take_output(run, watch, settings, agent.remaining(_DRAIN_AFTER_STOP_S))


def _journal_signals(run: Run, watch: _Watch) -> None:
    """Every signal cub sent to the agent goes into the journal (repeated SIGKILL rounds once)."""
    previous = None
    for sent in watch.agent.take_signals():
        if (sent.signal, sent.scope) == previous:
            continue
        previous = (sent.signal, sent.scope)
        run.machine.note(
            "agent_signalled",
            task_id=watch.task_id,
            data={
                "signal": sent.name,
                "to": sent.scope,
                "pid": watch.agent.pid,
                "processes": sent.processes,
            },
        )


def _journal_log_cut(run: Run, watch: _Watch, settings: LoopSettings) -> None:
    """harness.log hit its cap: the journal says so, and how much output it does not hold."""
    dropped = watch.agent.log_dropped_bytes
    if dropped:
        run.machine.note(
            "harness_log_capped",
            task_id=watch.task_id,
            data={"max_bytes": settings.log_max_bytes, "dropped_bytes": dropped},
        )


def _note_model(run: Run, reported: str | None) -> None:
    """The run's harness model is the first one an agent said it used: what was asked for may
    be an alias (``sonnet``) or nothing at all."""
    harness = run.ctx.harness
    if reported and harness is not None and not run.model_reported:
        run.model_reported = True
        run.ctx.harness = msgspec.structs.replace(harness, model=reported)


def _take_output(run: Run, watch: _Watch, settings: LoopSettings, output: Output) -> None:
    """Whole lines of the agent's output, as they arrived."""
    if not output.text:
        return
    run.observer.agent_output(output.text)
    if output.to_parse and watch.parser.feed_text(output.text):
        _account(run, watch, settings)


def _on_interrupt(run: Run, watch: _Watch, settings: LoopSettings) -> bool:
    """First signal while the agent runs. Returns True once the agent has been stopped."""
    machine = run.machine
    signum = run.watch.first
    assert signum is not None
    if machine.state != "stopping":
        machine.interrupt(signal=signum)
        if settings.on_interrupt == "finish":
            run.observer.message(
                f"interrupt: letting the current attempt finish "
                f"(up to {settings.grace:g}s; interrupt again to kill it)"
            )
            run.watch.finish_deadline = time.monotonic() + settings.grace
            return False
    if settings.on_interrupt == "finish":
        deadline = run.watch.finish_deadline
        if deadline is not None and time.monotonic() > deadline:
            run.watch.force_kill(signum)  # the grace ran out: treated as a second signal
        return False
    # SIGTERM asks for SIGTERM; a Ctrl+C gets the signal this agent is known to heed.
    is_term = signum in (signal.SIGTERM, signal.SIGHUP)
    first = int(signal.SIGTERM) if is_term else watch.harness.stop_signal
    run.observer.message(
        f"interrupt: stopping the agent (grace {settings.grace:g}s; interrupt again to kill it now)"
    )
    _stop(run, watch, settings, first, settings.grace)
    return True


def _circuit_breaker(agent: AgentProcess, settings: LoopSettings, now: float) -> str | None:
    if not settings.circuit_breaker:
        return None
    if settings.task_timeout is not None and now - agent.started_at > settings.task_timeout:
        return f"task timeout: the attempt ran longer than {settings.task_timeout:g}s"
    if settings.idle_timeout is not None and now - agent.last_output_at > settings.idle_timeout:
        return f"idle timeout: no output for {settings.idle_timeout:g}s"
    return None


def _account(run: Run, watch: _Watch, settings: LoopSettings) -> None:
    """Usage changed: update the run's live totals and fire the budget warning once."""
    usage, budget = watch.parser.state.usage, run.ctx.budget
    budget.tokens_used = watch.base_tokens + usage.total_tokens
    if usage.cost_usd is not None:
        budget.cost_usd = (watch.base_cost or 0.0) + usage.cost_usd
    else:
        budget.cost_usd = watch.base_cost
    # An estimate without a price may be replaced by exact, priced figures: recomputed each time.
    budget.cost_incomplete = watch.base_cost_incomplete or (
        usage.cost_usd is None and usage.total_tokens > 0
    )
    if not run.budget_warned and settings.crossed_warning(budget):
        run.budget_warned = True
        if run.hooks is not None:
            run.hooks.fire("on-budget-warning")


def _outcome(
    result: tuple[str | None, str | None],
    watch: _Watch,
) -> tuple[str, ErrorInfo | None]:
    stopped_by, reason = result
    state, code = watch.parser.state, watch.agent.returncode
    if stopped_by == "timed_out":
        return "timed_out", ErrorInfo(type="CircuitBreaker", message=reason or "timed out")
    if stopped_by is not None and _finished_anyway(watch):
        # Asked to stop, it finished its task first (committed and reported success, or, for a
        # plain command, exited 0): that work is done and is settled as done.
        return "succeeded", None
    if stopped_by is not None:
        message = reason or "stopped by an interrupt"
        return "interrupted", ErrorInfo(type="Stopped", message=message)
    if state.stuck_reason is not None:
        return "stuck", None
    if state.is_error:
        return "failed", ErrorInfo(
            type="AgentError", message=state.error_message or "the agent reported an error"
        )
    if code == 0 or watch.stopped_after_result:
        # The result said success; being stopped for lingering afterwards is not a failure.
        return "succeeded", None
    return "failed", ErrorInfo(type="AgentExit", message=_exit_text(code))


def _finished_anyway(watch: _Watch) -> bool:
    """Whether an agent that cub stopped ended with its task done all the same: exit 0, no
    error, not stuck, and a success result of its own (a plain command has no result: its exit
    code decides)."""
    state = watch.parser.state
    reported = state.result_seen or watch.harness.name == "command"
    return (
        watch.agent.returncode == 0
        and reported
        and not state.is_error
        and state.stuck_reason is None
    )


def _exit_text(code: int | None) -> str:
    if code is None:
        return "the agent did not exit"
    if code < 0:
        return f"the agent was killed by {_signal_name(-code)}"
    return f"the agent exited with code {code}"


def _attempt_record(
    task: Task,
    attempt: int,
    outcome: str,
    started_at: str,
    t0: float,
    usage: Usage,
    *,
    returncode: int | None = None,
    stuck_reason: str | None = None,
    error: ErrorInfo | None = None,
    model: str | None = None,
) -> TaskAttempt:
    exit_code, sig = (
        (None, -returncode) if returncode is not None and returncode < 0 else (returncode, None)
    )
    return TaskAttempt(
        task_id=task.id,
        title=task.title,
        attempt=attempt,
        outcome=outcome,  # type: ignore[arg-type]
        exit_code=exit_code,
        signal=sig,
        started_at=started_at,
        ended_at=utc_now(),
        duration_s=round(time.monotonic() - t0, 3),
        usage=usage,
        stuck_reason=stuck_reason,
        error=error,
        model=model,
    )


def _signal_name(signum: int) -> str:
    """SIGTERM, or "signal 40" for one without a name (the real-time signals)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
