"""The run state machine: `transitions` driven by the chart in cub/chart/definition.py.

The one rule that matters: every terminal state is entered through `on_enter_terminal`, which
writes run.json exactly once. Nothing else writes a run's final record, and nothing ends a run
except a trigger.
"""

from __future__ import annotations

import os
import signal as signals
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transitions import EventData, Machine, State
from transitions.core import MachineError

from cub.chart.checks import check_chart
from cub.chart.definition import FAILED, RUN_CHART, Chart, Edge
from cub.chart.exit_codes import exit_code_for
from cub.lifecycle.context import RunContext, error_info
from cub.records.schemas import (
    SCHEMA_VERSION,
    ErrorInfo,
    RunRecord,
    StatusRecord,
    Transition,
)
from cub.records.store import utc_now

_CHECKED_CHARTS: set[int] = set()

# A testing aid, not a feature: `CUB_FAULT=raise:WHERE` raises `InjectedFault` (an unexpected
# exception, as a bug in cub would) and `CUB_FAULT=pause:WHERE:SECONDS` sleeps, once, when the
# run enters the state WHERE (or starts in it) or journals an entry of kind WHERE (e.g.
# `agent_started`). The exit-path scenarios use it to reach endings no real input reaches on
# demand: a crash in each state, two signals while cub is still `created`. Read once per run
# machine, never by recovery.
FAULT_VAR = "CUB_FAULT"


class InjectedFault(RuntimeError):
    """The exception `CUB_FAULT=raise:WHERE` raises."""


class _Fault:
    def __init__(self, spec: str) -> None:
        action, _, rest = spec.partition(":")
        where, _, seconds = rest.partition(":")
        if action not in ("raise", "pause") or not where:
            raise ValueError(f"{FAULT_VAR}={spec!r}: expected raise:WHERE or pause:WHERE:SECONDS")
        self.action, self.where = action, where
        self.seconds = float(seconds) if action == "pause" else 0.0

    @classmethod
    def from_env(cls) -> _Fault | None:
        spec = os.environ.get(FAULT_VAR)
        try:
            return cls(spec) if spec else None
        except ValueError as exc:
            print(f"cub: ignored: {exc}", file=sys.stderr)
            return None


def _checked(chart: Chart) -> Chart:
    """Refuse a bad chart when the machine is built (once per chart per process)."""
    if id(chart) not in _CHECKED_CHARTS:
        check_chart(chart)
        _CHECKED_CHARTS.add(id(chart))
    return chart


def signal_word(sig: int | str | None) -> str | None:
    """``signal.SIGTERM`` or ``"SIGTERM"`` → ``"sigterm"`` (the reason_code spelling)."""
    if sig is None:
        return None
    if isinstance(sig, str):
        return sig.lower()
    return signals.Signals(sig).name.lower()


class RunMachine:
    """The model object: triggers (validate, reject, interrupt, ...) are methods added by
    `transitions` from the chart; ``state`` is the current state's name."""

    state: str

    if TYPE_CHECKING:
        # The trigger methods `transitions` adds from the chart, declared for the type checker
        # only (at run time the machine binds them; a real attribute would block the binding).
        def validate(self, **kwargs: Any) -> bool: ...
        def reject(self, **kwargs: Any) -> bool: ...
        def accept(self, **kwargs: Any) -> bool: ...
        def prepared(self, **kwargs: Any) -> bool: ...
        def listed(self, **kwargs: Any) -> bool: ...
        def setup_failed(self, **kwargs: Any) -> bool: ...
        def start_task(self, **kwargs: Any) -> bool: ...
        def finish(self, **kwargs: Any) -> bool: ...
        def finish_failed(self, **kwargs: Any) -> bool: ...
        def exhaust_budget(self, **kwargs: Any) -> bool: ...
        def attempt_ended(self, **kwargs: Any) -> bool: ...
        def hook_failed(self, **kwargs: Any) -> bool: ...
        def task_succeeded(self, **kwargs: Any) -> bool: ...
        def continue_loop(self, **kwargs: Any) -> bool: ...
        def stop_on_failure(self, **kwargs: Any) -> bool: ...
        def supervise(self, **kwargs: Any) -> bool: ...
        def children_done(self, **kwargs: Any) -> bool: ...
        def children_failed(self, **kwargs: Any) -> bool: ...
        def interrupt(self, **kwargs: Any) -> bool: ...
        def stopped(self, **kwargs: Any) -> bool: ...
        def force_kill(self, **kwargs: Any) -> bool: ...
        def crash(self, **kwargs: Any) -> bool: ...

    def __init__(
        self,
        ctx: RunContext,
        *,
        chart: Chart = RUN_CHART,
        initial: str | None = None,
        on_terminal: Callable[[], None] | None = None,
        recorded_by: str = "machine",
    ) -> None:
        self.ctx = ctx
        self.chart = _checked(chart)
        self.record: RunRecord | None = None
        self.recorded_by = recorded_by
        self._on_terminal = on_terminal
        self._persisted = False
        self._crashing = False
        self._fault = _Fault.from_env() if recorded_by == "machine" else None
        self._edges = {(e.trigger, e.source): e for e in chart.edges}
        self.machine = Machine(
            model=self,
            states=[self._state(name) for name in chart.states],
            transitions=[self._transition(edge) for edge in chart.edges],
            initial=initial or chart.initial,
            auto_transitions=False,
            send_event=True,
            on_exception="_on_callback_error",
        )

    def _state(self, name: str) -> State:
        on_enter: list[str | Callable[..., Any]] = ["_journal_transition"]
        if self.chart.is_terminal(name):
            on_enter.append("on_enter_terminal")
        return State(name, on_enter=on_enter)

    def _transition(self, edge: Edge) -> dict[str, Any]:
        return {
            "trigger": edge.trigger,
            "source": edge.source,
            "dest": edge.dest,
            "before": "_note_trigger",
        }

    # -- queries ------------------------------------------------------------------------------

    @property
    def is_terminal(self) -> bool:
        return self.chart.is_terminal(self.state)

    @property
    def exit_code(self) -> int | None:
        return self.record.exit_code if self.record else None

    def edge(self, trigger: str) -> Edge:
        """The edge ``trigger`` takes from the current state."""
        return self._edges[(trigger, self.state)]

    # -- journal --------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the run's first status and journal line, before the first trigger."""
        self.note("run_started", data={"state": self.state})
        self.write_status()
        self._inject_fault(self.state)

    def _inject_fault(self, where: str) -> None:
        """The `CUB_FAULT` testing aid (see FAULT_VAR), at ``where``: a state or journal kind."""
        fault = self._fault
        if fault is None or fault.where != where or self.is_terminal:
            return
        self._fault = None  # once
        if fault.action == "pause":
            time.sleep(fault.seconds)
            return
        raise InjectedFault(f"{FAULT_VAR}: raised on {where}")

    def note(
        self,
        kind: str,
        *,
        task_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Journal something that is not a transition (a claim, an agent start, a hook)."""
        self.ctx.last_event = kind
        if self.ctx.store is not None:
            self.ctx.store.append_event(
                kind, state_from=self.state, state_to=self.state, task_id=task_id, data=data
            )
        self._inject_fault(kind)

    def write_status(self) -> None:
        if self.ctx.store is not None:
            self.ctx.store.write_status(self.status_record())

    def _journal_transition(self, event: EventData) -> None:
        ctx = self.ctx
        assert event.transition is not None
        source, dest, trigger = event.transition.source, event.transition.dest, event.event.name
        at = utc_now()
        dest = dest or source  # internal transitions stay where they are
        ctx.history.append(Transition(from_=source, to=dest, trigger=trigger, at=at))
        ctx.last_event = f"{trigger}: {source} -> {dest}"
        if ctx.store is None:
            return
        data = {k: v for k, v in event.kwargs.items() if k != "error" and _is_plain(v)}
        task_id = ctx.current_task.id if ctx.current_task else None
        ctx.store.append_event(
            "transition",
            state_from=source,
            state_to=dest,
            trigger=trigger,
            task_id=task_id,
            data=data,
        )
        ctx.store.write_status(self.status_record())
        self._inject_fault(dest)

    # -- how a run ends -------------------------------------------------------------------------

    def _note_trigger(self, event: EventData) -> None:
        """Take reason, reason_code, error and signal from the trigger's keyword arguments."""
        assert event.transition is not None
        ctx, kwargs = self.ctx, event.kwargs
        edge = self._edges[(event.event.name, event.transition.source)]
        if edge.trigger == "interrupt":
            ctx.interrupt_signal = signal_word(kwargs.get("signal")) or "sigint"
            return
        if not self.chart.is_terminal(edge.dest):
            return
        error = kwargs.get("error")
        if isinstance(error, BaseException):
            error = error_info(error)
        ctx.error = error if isinstance(error, ErrorInfo) else ctx.error
        ctx.reason_code = kwargs.get("reason_code") or self._default_reason_code(edge)
        ctx.reason = kwargs.get("reason") or self._default_reason(edge)

    def _default_reason_code(self, edge: Edge) -> str:
        if edge.trigger == "stopped":
            return self.ctx.interrupt_signal or "sigint"
        if edge.trigger == "crash":
            return "exception"
        return edge.reason_codes[0] if edge.reason_codes else edge.trigger

    def _default_reason(self, edge: Edge) -> str:
        if edge.trigger == "crash" and self.ctx.error is not None:
            return f"unexpected {self.ctx.error.type}: {self.ctx.error.message}"
        if edge.trigger == "stopped":
            return f"stopped on {(self.ctx.interrupt_signal or 'sigint').upper()}"
        return edge.summary[:1].upper() + edge.summary[1:]

    def on_enter_terminal(self, event: EventData | None = None) -> None:
        """The one writer of run.json. Idempotent; falls back to a `failed` record if building or
        writing the real one raises, so the run always ends with a record."""
        if self._persisted:
            return
        self._persisted = True
        if self._on_terminal is not None:
            self._on_terminal()
        try:
            self._write_record()
        except Exception as exc:
            self._persist_fallback(exc)

    def _write_record(self) -> None:
        self.record = self._run_record()
        if self.ctx.store is not None:
            self.ctx.store.write_run(self.record)

    def _persist_fallback(self, exc: Exception) -> None:
        self.ctx.error = error_info(exc)
        self.ctx.reason_code = "exception"
        self.ctx.reason = f"writing the run record failed: {type(exc).__name__}: {exc}"
        self.machine.set_state(FAILED, model=self)
        try:
            self._write_record()
        except Exception as again:
            print(f"cub: could not write the run record: {again}", file=sys.stderr)

    def _on_callback_error(self, event: EventData) -> None:
        error = event.error
        if not isinstance(error, Exception) or isinstance(error, MachineError | InjectedFault):
            # KeyboardInterrupt, SystemExit, a forced kill: never swallowed here. A trigger that
            # is not valid in this state is the caller's mistake, not the run's failure. An
            # injected fault goes on up like an exception in the caller's own code would.
            raise error  # type: ignore[misc]
        if self.is_terminal or self._crashing:
            if not self._persisted:
                self._persisted = True
                self._persist_fallback(error)
            return
        self._crashing = True
        try:
            self.crash(error=error)  # type: ignore[attr-defined]
        finally:
            self._crashing = False

    # -- records --------------------------------------------------------------------------------

    def _common_fields(self) -> dict[str, Any]:
        """What status.json and run.json both say about the run."""
        ctx = self.ctx
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": ctx.run_id,
            "parent_run_id": ctx.parent_run_id,
            "mode": ctx.mode,
            "state": self.state,
            "started_at": ctx.started_at,
            "argv": ctx.argv,
            "cwd": ctx.cwd,
            "pid": ctx.pid,
            "host": ctx.host,
            "cub_version": ctx.cub_version,
            "harness": ctx.harness,
            "branch": ctx.branch,
            "budget": ctx.budget,
            "tasks": ctx.tasks,
        }

    def status_record(self) -> StatusRecord:
        ctx = self.ctx
        return StatusRecord(
            **self._common_fields(),
            updated_at=utc_now(),
            current_task=ctx.current_task,
            runner=ctx.runner(),
            last_event=ctx.last_event,
            claimed_tasks=list(ctx.claimed_tasks),
        )

    def _run_record(self) -> RunRecord:
        ctx = self.ctx
        reason_code = ctx.reason_code or "unknown"
        return RunRecord(
            **self._common_fields(),
            exit_code=exit_code_for(self.state, reason_code),
            reason=ctx.reason or reason_code,
            reason_code=reason_code,
            error=ctx.error,
            recorded_by=self.recorded_by,  # type: ignore[arg-type]
            ended_at=ctx.ended_at or utc_now(),
            duration_s=round(ctx.elapsed(), 3),
            history=ctx.history,
            children=ctx.children,
            config=ctx.config,
        )


def _is_plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
