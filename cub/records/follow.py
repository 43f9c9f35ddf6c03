"""Following a live run: new journal lines and the current agent's output, as they land."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from cub.records.reader import read_run_json
from cub.records.schemas import Event, RunRecord


class _FileTail:
    """New complete lines of a growing file.

    The file is read through one open handle, so a file renamed away (a retried task's log
    moved to attempt-N/) is still read to its end; the next attempt's log, created under the
    old name, is another file and gets another tail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: BinaryIO | None = None
        self.partial = b""

    def lines(self) -> list[str]:
        if self.fh is None:
            try:
                self.fh = self.path.open("rb")
            except FileNotFoundError:
                return []
        data = self.partial + self.fh.read()
        *complete, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]

    def drain(self) -> list[str]:
        """Every line left, the last one even without its newline; then the file is closed."""
        lines = self.lines()
        if self.partial:
            lines.append(self.partial.decode("utf-8", "replace"))
            self.partial = b""
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        return lines


_event_decoder = msgspec.json.Decoder(Event)


class RunFollower:
    """The run's journal, and each attempt's agent output after the event that started it.

    Which log to follow comes from the journal's `agent_started` events rather than from
    status.json, so an attempt that starts and ends between two polls is still shown whole,
    and so is a finished run replayed from its records."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.events = _FileTail(run_dir / "events.jsonl")
        self.log: _FileTail | None = None

    def poll(self) -> Iterator[tuple[str, str]]:
        """("event", json line) and ("output", agent line) since the last poll."""
        for line in self.events.lines():
            started = self._agent_started(line)
            if started is not None:
                # The previous attempt is over: the rest of its output comes first.
                yield from self._drain_log()
                self.log = _FileTail(self._log_path(*started))
            yield "event", line
        if self.log is not None:
            for line in self.log.lines():
                yield "output", line

    def finish(self) -> Iterator[tuple[str, str]]:
        """Whatever is left once the run has ended, a last unterminated line included."""
        yield from self.poll()
        for line in self.events.drain():
            yield "event", line
        yield from self._drain_log()

    def _drain_log(self) -> Iterator[tuple[str, str]]:
        if self.log is not None:
            for line in self.log.drain():
                yield "output", line
            self.log = None

    @staticmethod
    def _agent_started(line: str) -> tuple[str, int] | None:
        if '"agent_started"' not in line:
            return None
        try:
            event = _event_decoder.decode(line)
        except (msgspec.DecodeError, RecursionError):
            return None
        if event.kind != "agent_started" or not event.task_id:
            return None
        attempt = event.data.get("attempt")
        return event.task_id, attempt if isinstance(attempt, int) else 1

    def _log_path(self, task_id: str, attempt: int) -> Path:
        """Where that attempt's output is: moved under attempt-N/ once a later attempt began."""
        task_dir = self.run_dir / "tasks" / task_id
        archived = task_dir / f"attempt-{attempt}" / "harness.log"
        return archived if os.path.exists(archived) else task_dir / "harness.log"

    def final_record(self) -> RunRecord | None:
        return read_run_json(self.run_dir)
