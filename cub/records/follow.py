"""Following a live run: new journal lines and the current agent's output, as they land."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from cub.records.schemas import RunRecord, StatusRecord


class _FileTail:
    """New complete lines of a growing file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]


class RunFollower:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.events = _FileTail(run_dir / "events.jsonl")
        self.log: _FileTail | None = None

    def poll(self) -> Iterator[tuple[str, str]]:
        """("event", json line) and ("output", agent line) since the last poll."""
        for line in self.events.lines():
            yield "event", line
        log_path = self._current_log()
        if log_path is not None and (self.log is None or self.log.path != log_path):
            self.log = _FileTail(log_path)
        if self.log is not None:
            for line in self.log.lines():
                yield "output", line

    def _current_log(self) -> Path | None:
        try:
            status = msgspec.json.decode(
                (self.run_dir / "status.json").read_bytes(), type=StatusRecord
            )
        except (FileNotFoundError, msgspec.DecodeError):
            return None
        if status.current_task is None:
            return self.log.path if self.log else None
        return self.run_dir / "tasks" / status.current_task.id / "harness.log"

    def final_record(self) -> RunRecord | None:
        try:
            return msgspec.json.decode((self.run_dir / "run.json").read_bytes(), type=RunRecord)
        except (FileNotFoundError, msgspec.DecodeError):
            return None
