"""The default backend: ``.cub/tasks.jsonl``, one task per line (the beads export format).

Lines cub does not change are written back byte for byte; a changed line is the original JSON
object with the change applied, so unknown keys, key order and the ``dependsOn``/``depends_on``
spelling all survive.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from cub.config.messages import describe_validation_error, json_error_parts, nul_character_at
from cub.errors import InvalidTaskId, TaskFileError
from cub.tasks import changes
from cub.tasks.file_store import FileTaskBackend
from cub.tasks.model import (
    MAX_TASK_ID_LENGTH,
    TASK_ENTRY_DECODER,
    Task,
    TaskEntry,
    depends_on_key,
    validate_task_id,
)

DEFAULT_PATH = Path(".cub") / "tasks.jsonl"
_VALUES = msgspec.json.Decoder(msgspec.Raw)  # each JSON value's bytes, undecoded
# Task ids a line each, each of the characters `validate_task_id` allows, as many as it allows.
_ID = rf"[A-Za-z0-9._-]{{1,{MAX_TASK_ID_LENGTH}}}"
_ID_LINES = re.compile(rf"{_ID}(?:\n{_ID})*")


class JsonlDocument:
    def __init__(self, data: bytes, label: str) -> None:
        self.label = label
        self.changed = False
        self.touched: set[int] = set()
        self.removed: str | None = None
        self.lines: list[bytes] = data.split(b"\n")
        if self.lines and not self.lines[-1]:
            self.lines.pop()  # the newline that ends the last line
        self._file_lines = list(self.lines)  # as read, for `original`
        self.tasks: list[Task] = []
        self._line_index: list[int] = []  # task position -> index into self.lines
        self._by_id: dict[str, int] = {}
        # The checks `decode_line` makes of each line's bytes, made once for the whole file:
        # a backlog of 100,000 tasks is parsed at the start of every run.
        checked = _plain_text(data)
        if checked and self._read_whole(data):
            return
        for line_index, line in enumerate(self.lines):
            if not line or line.isspace():
                continue  # blank lines are allowed and kept as they are
            task = _decode_checked(line) if checked else None
            self._add(task or decode_line(line, label, line_index + 1), line_index)

    def _read_whole(self, data: bytes) -> bool:
        """Read a file of plain-text lines, each one task and nothing else, with two calls of
        the decoder (where each value is, then the tasks); False (nothing read) for any other
        file, to be read line by line, which says what is wrong where.

        The decoder reads values one after another, whatever lines they are on, so it reads
        what reading line by line would only when its values are the lines. They are when
        there are as many values as lines, each as long as its line. A value starting k bytes
        into its line would end k bytes past the line: for k = 1 on the newline, which no
        value ends with; for k >= 2 in the next line, whose value then starts at least k - 1
        bytes in, so k >= 2 again; and so on, the last value ending past the end of the file.
        So k = 0 for every line."""
        lines = self.lines
        try:
            values = _VALUES.decode_lines(data)
            if len(values) != len(lines) or list(map(len, values)) != list(map(len, lines)):
                return False
            entries = TASK_ENTRY_DECODER.decode_lines(data)
        except (msgspec.DecodeError, RecursionError):
            return False
        tasks = [entry.to_task() for entry in entries]
        ids = [task.id for task in tasks]
        by_id = dict(zip(ids, range(len(ids)), strict=True))
        if len(by_id) < len(ids) or not _valid_ids(ids, by_id):
            return False
        self.tasks, self._by_id, self._line_index = tasks, by_id, list(range(len(tasks)))
        return True

    def _add(self, task: Task, line_index: int) -> None:
        first = self._by_id.get(task.id)
        if first is not None:
            raise TaskFileError(
                f"{self.label}:{line_index + 1}: duplicate task id {task.id!r} "
                f"(first on line {self._line_index[first] + 1})"
            )
        self._by_id[task.id] = len(self.tasks)
        self.tasks.append(task)
        self._line_index.append(line_index)

    def position(self, task_id: str) -> int | None:
        return self._by_id.get(task_id)

    def location(self, index: int) -> str:
        return f"{self.label}:{self._line_number(index)}"

    def _line_number(self, index: int) -> int:
        return self._line_index[index] + 1

    def raw(self, index: int) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.lines[self._line_index[index]])
        return decoded

    def original(self, index: int) -> dict[str, Any] | None:
        line_index = self._line_index[index]
        if line_index >= len(self._file_lines):
            return None  # appended since the file was read
        decoded: dict[str, Any] = msgspec.json.decode(self._file_lines[line_index])
        return decoded

    def update(self, index: int, change: changes.Changes) -> Task:
        raw = self.raw(index)
        changes.apply(raw, change)
        return self.replace(index, raw)

    def replace(self, index: int, raw: dict[str, Any]) -> Task:
        line_index = self._line_index[index]
        encoded = msgspec.json.encode(raw)
        task = decode_line(encoded, self.label, self._line_number(index))
        if encoded != self.lines[line_index]:
            self.changed = True
            self.touched.add(index)
        self.lines[line_index] = encoded
        self.tasks[index] = task
        return task

    def append(self, raw: dict[str, Any]) -> Task:
        encoded = msgspec.json.encode(raw)
        task = decode_line(encoded, self.label, len(self.lines) + 1)
        self.lines.append(encoded)
        self.changed = True
        self._add(task, len(self.lines) - 1)
        self.touched.add(len(self.tasks) - 1)
        return task

    def remove(self, index: int) -> None:
        """Take the task at ``index`` out (its line goes; blank lines stay)."""
        line_index = self._line_index[index]
        del self.lines[line_index]
        del self.tasks[index]
        del self._line_index[index]
        self._line_index = [i - 1 if i > line_index else i for i in self._line_index]
        self._by_id = {t.id: i for i, t in enumerate(self.tasks)}
        self.changed = True

    def depends_on_spelling(self) -> str:
        # New tasks follow the spelling the file already uses.
        for line_index in reversed(self._line_index):
            line = self.lines[line_index]
            if b'"depends_on"' in line or b'"dependsOn"' in line:
                return depends_on_key(msgspec.json.decode(line))
        return "dependsOn"

    def to_bytes(self) -> bytes:
        return b"\n".join(self.lines) + b"\n" if self.lines else b""


def decode_line(line: bytes, label: str, number: int) -> Task:
    """Line ``number`` of the task file ``label`` → Task; ``TaskFileError`` naming
    ``label:number`` otherwise."""
    # Checked here, not left to the decoder: it does not look inside keys it skips, and a
    # line taken now would fail when cub next rewrites it.
    if not line.isascii():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskFileError(
                f"{label}:{number}: not valid UTF-8 at column {exc.start + 1}"
            ) from None
    try:
        entry = TASK_ENTRY_DECODER.decode(line)
    except msgspec.ValidationError as exc:
        problem = describe_validation_error(exc, root_type=TaskEntry, data=_generic(line))
        raise TaskFileError(f"{label}:{number}: {problem.render()}") from None
    except msgspec.DecodeError as exc:
        raise TaskFileError(f"{label}:{number}: invalid JSON: {_json_detail(str(exc))}") from None
    except RecursionError:
        raise TaskFileError(f"{label}:{number}: invalid JSON: nested too deeply") from None
    if b"\\u0000" in line and (at := nul_character_at(_generic(line))) is not None:
        raise TaskFileError(f"{label}:{number}: {at}: contains a NUL character (\\u0000)")
    try:
        validate_task_id(entry.id)
    except InvalidTaskId as exc:
        raise TaskFileError(f"{label}:{number}: {exc}") from None
    return entry.to_task()


def _plain_text(data: bytes) -> bool:
    """Whether every line of ``data`` passes `decode_line`'s checks of its bytes: valid UTF-8
    and no NUL character spelled as an escape."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
    # (A one-byte search first: a file without a backslash is common, and far faster to tell.)
    return b"\\" not in data or b"\\u0000" not in data


def _valid_ids(ids: list[str], by_id: dict[str, int]) -> bool:
    """Whether every one of ``ids`` passes `validate_task_id`, checked all at once: as one
    text, a line each (no id holds a newline: the count of lines tells)."""
    if not ids:
        return True
    text = "\n".join(ids)
    return (
        _ID_LINES.fullmatch(text) is not None
        and text.count("\n") == len(ids) - 1
        and ".." not in text
        and "." not in by_id
    )


def _decode_checked(line: bytes) -> Task | None:
    """The task on a line whose bytes are known to be plain text (`_plain_text`); None when it
    does not decode, for `decode_line` to say why."""
    try:
        entry = TASK_ENTRY_DECODER.decode(line)
        validate_task_id(entry.id)
    except (msgspec.DecodeError, RecursionError, InvalidTaskId):
        return None
    return entry.to_task()


def _generic(line: bytes) -> Any:
    try:
        return msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None


def _json_detail(message: str) -> str:
    offset, detail = json_error_parts(message)
    return detail if offset is None else f"{detail} at column {offset + 1}"


class JsonlBackend(FileTaskBackend):
    kind = "jsonl"

    def parse(self, data: bytes) -> JsonlDocument:
        return JsonlDocument(data, self.label)
