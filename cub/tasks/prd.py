"""The ``prd.json`` backend: one JSON document whose ``tasks`` array holds the tasks.

Every other top-level key, and every unknown key of a task, is kept on rewrite. The document is
written back pretty-printed (two-space indent), the way such files are usually edited by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from cub.config.messages import describe_validation_error, json_error_parts, nul_character_at
from cub.errors import InvalidTaskId, TaskFileError
from cub.tasks import changes
from cub.tasks.file_store import FileTaskBackend
from cub.tasks.model import Task, TaskEntry, depends_on_key, validate_task_id

DEFAULT_PATH = Path("prd.json")


class PrdDocument:
    def __init__(self, data: bytes, label: str) -> None:
        self.label = label
        self.changed = False
        self.touched: set[int] = set()
        self.removed: str | None = None
        self.root: dict[str, Any] = _decode_root(data, label)
        raw_tasks = self.root.setdefault("tasks", [])
        if not isinstance(raw_tasks, list):
            raise TaskFileError(f"{label}: $.tasks: Expected array, got {type(raw_tasks).__name__}")
        self.raw_tasks: list[Any] = raw_tasks
        self._file_tasks = msgspec.json.decode(msgspec.json.encode(raw_tasks))  # for `original`
        self.tasks: list[Task] = []
        self._by_id: dict[str, int] = {}
        for index, raw in enumerate(raw_tasks):
            task = decode_task(raw, label, index)
            if task.id in self._by_id:
                raise TaskFileError(
                    f"{label}: $.tasks[{index}].id: duplicate task id {task.id!r} "
                    f"(first at $.tasks[{self._by_id[task.id]}])"
                )
            self._by_id[task.id] = index
            self.tasks.append(task)

    def position(self, task_id: str) -> int | None:
        return self._by_id.get(task_id)

    def location(self, index: int) -> str:
        return f"{self.label}: $.tasks[{index}]"

    def raw(self, index: int) -> dict[str, Any]:
        return dict(self.raw_tasks[index])

    def original(self, index: int) -> dict[str, Any] | None:
        return dict(self._file_tasks[index]) if index < len(self._file_tasks) else None

    def update(self, index: int, change: changes.Changes) -> Task:
        raw = self.raw(index)
        changes.apply(raw, change)
        return self.replace(index, raw)

    def replace(self, index: int, raw: dict[str, Any]) -> Task:
        task = decode_task(raw, self.label, index)
        if raw != self.raw_tasks[index]:
            self.changed = True
            self.touched.add(index)
        self.raw_tasks[index] = raw
        self.tasks[index] = task
        return task

    def append(self, raw: dict[str, Any]) -> Task:
        index = len(self.raw_tasks)
        task = decode_task(raw, self.label, index)
        self.raw_tasks.append(raw)
        self.changed = True
        self.touched.add(index)
        self._by_id[task.id] = index
        self.tasks.append(task)
        return task

    def remove(self, index: int) -> None:
        """Take the task at ``index`` out of the ``tasks`` array."""
        del self.raw_tasks[index]
        del self.tasks[index]
        self._by_id = {t.id: i for i, t in enumerate(self.tasks)}
        self.changed = True

    def depends_on_spelling(self) -> str:
        for raw in reversed(self.raw_tasks):
            if "dependsOn" in raw or "depends_on" in raw:
                return depends_on_key(raw)
        return "dependsOn"

    def to_bytes(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self.root), indent=2) + b"\n"


def decode_task(raw: object, label: str, index: int) -> Task:
    where = f"$.tasks[{index}]"
    at = nul_character_at(raw, where)
    if at is not None:
        raise TaskFileError(f"{label}: {at}: contains a NUL character (\\u0000)")
    try:
        entry = msgspec.convert(raw, TaskEntry)
    except msgspec.ValidationError as exc:
        problem = describe_validation_error(exc, root_type=TaskEntry, data=raw)
        problem = problem._replace(path=problem.path.replace("$", where, 1))
        raise TaskFileError(f"{label}: {problem.render()}") from None
    try:
        validate_task_id(entry.id)
    except InvalidTaskId as exc:
        raise TaskFileError(f"{label}: {where}.id: {exc}") from None
    return entry.to_task()


def _decode_root(data: bytes, label: str) -> dict[str, Any]:
    if not data.strip():
        return {}
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise TaskFileError(f"{label}: line {bad_line}: not valid UTF-8") from None
    try:
        root = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        offset, detail = json_error_parts(str(exc))
        line = "end" if offset is None else data[:offset].count(b"\n") + 1
        raise TaskFileError(f"{label}: line {line}: invalid JSON: {detail}") from None
    except RecursionError:
        raise TaskFileError(f"{label}: invalid JSON: nested too deeply") from None
    if not isinstance(root, dict):
        raise TaskFileError(f'{label}: $: expected a JSON object with a "tasks" array')
    return root


class PrdBackend(FileTaskBackend):
    kind = "prd"

    def parse(self, data: bytes) -> PrdDocument:
        return PrdDocument(data, self.label)
