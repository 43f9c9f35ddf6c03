"""Operations shared by the file-backed task stores (``tasks.jsonl``, ``prd.json``).

Every change is a transaction: take the exclusive lock on ``<file>.lock``, re-read the file
inside it (another process may have changed it since we last looked), apply the change onto the
task's original JSON object, and replace the file atomically. Readers need no lock: a replaced
file is always whole.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import filelock

from cub.config.messages import relative_label
from cub.errors import BackendError, TaskNotFound
from cub.records.durable import write_atomic
from cub.tasks import changes
from cub.tasks.integrity import dependency_problems
from cub.tasks.model import DEFAULT_PRIORITY, Task, new_task_dict, validate_task_id
from cub.tasks.selection import pick_task

LOCK_TIMEOUT_S = 30.0
NEW_FILE_MODE = 0o644  # task files are meant to be committed and shared
DEFAULT_ID_PREFIX = "task"


class TaskDocument(Protocol):
    """A parsed task file that can change tasks in place and serialise itself again."""

    tasks: list[Task]
    # Set by update() and append() when the serialised file would differ.
    changed: bool

    def position(self, task_id: str) -> int | None: ...

    def update(self, index: int, change: changes.Changes) -> Task: ...

    def append(self, raw: dict[str, Any]) -> Task: ...

    def location(self, index: int) -> str: ...

    def depends_on_spelling(self) -> str: ...

    def to_bytes(self) -> bytes: ...


class FileTaskBackend:
    """Base of the JSONL and prd.json backends; subclasses only parse their format."""

    kind = "file"

    def __init__(self, path: Path, project_dir: Path) -> None:
        self.path = path
        self.project_dir = project_dir
        self.label = relative_label(path, project_dir)
        self._lock = filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
        # The last document read or written, with the identity of the file it came from: a
        # loop claims and closes task after task, and re-parsing a large backlog for each
        # change would cost more than the change.
        self._cached: tuple[_FileIdentity, TaskDocument] | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.label}"

    def parse(self, data: bytes) -> TaskDocument:
        raise NotImplementedError

    # --- reading ---------------------------------------------------------------------------

    def load(self) -> list[Task]:
        return list(self._read().tasks)  # a copy: the document itself may be cached and change

    def get(self, task_id: str) -> Task:
        return self._find(self._read(), task_id)

    def problems(self) -> list[str]:
        document = self._read()
        where = {task.id: document.location(i) for i, task in enumerate(document.tasks)}
        return [
            f"{where[task_id]}: {message}"
            for task_id, message in dependency_problems(document.tasks)
        ]

    # --- changing --------------------------------------------------------------------------

    def claim_next(
        self,
        run_id: str,
        *,
        epic: str | None,
        label: str | None,
        task_id: str | None = None,
        exclude: Collection[str] = (),
    ) -> Task | None:
        with self._transaction() as document:
            task = pick_task(
                document.tasks, epic=epic, label=label, task_id=task_id, exclude=exclude
            )
            if task is None:
                return None
            return self._apply(document, task.id, changes.claim(task, run_id))

    def release(
        self, task_id: str, run_id: str, note: str | None = None, *, uncount: bool = False
    ) -> bool:
        return self._guarded(task_id, lambda task: changes.release(task, run_id, note, uncount))

    def mark_retry(self, task_id: str, run_id: str, note: str | None = None) -> bool:
        return self._guarded(task_id, lambda task: changes.retry(task, run_id, note))

    def mark_failed(self, task_id: str, run_id: str, reason: str) -> bool:
        return self._guarded(task_id, lambda task: changes.fail(task, run_id, reason))

    def close(self, task_id: str, run_id: str, reason: str) -> Task:
        with self._transaction() as document:
            task = self._find(document, task_id)
            return self._apply(document, task_id, changes.close(task, run_id, reason))

    def fail_closed(self, task_id: str, reason: str) -> bool:
        """Closed → failed, whoever closed it (see `changes.fail_closed`); False if the task
        is not in the file."""
        with self._transaction() as document:
            if document.position(task_id) is None:
                return False
            self._apply(
                document, task_id, changes.fail_closed(self._find(document, task_id), reason)
            )
            return True

    def update_notes(self, task_id: str, note: str) -> Task:
        with self._transaction() as document:
            task = self._find(document, task_id)
            return self._apply(document, task_id, changes.note(task, note))

    def add(
        self,
        title: str,
        *,
        description: str = "",
        priority: int = DEFAULT_PRIORITY,
        issue_type: str = "task",
        labels: Sequence[str] = (),
        depends_on: Sequence[str] = (),
        parent: str | None = None,
        acceptance_criteria: str | list[str] | None = None,
        task_id: str | None = None,
    ) -> Task:
        for ref in (*depends_on, *([parent] if parent else []), *([task_id] if task_id else [])):
            validate_task_id(ref)
        with self._transaction() as document:
            if task_id is not None and document.position(task_id) is not None:
                raise BackendError(f"{self.label}: a task with id {task_id!r} already exists")
            raw = new_task_dict(
                task_id or next_task_id([t.id for t in document.tasks]),
                title,
                description=description,
                priority=priority,
                issue_type=issue_type,
                labels=list(labels),
                depends_on=list(depends_on),
                parent=parent,
                acceptance_criteria=acceptance_criteria,
                depends_on_spelling=document.depends_on_spelling(),
            )
            return document.append(raw)

    def drop_stale_temp_files(self) -> list[Path]:
        """Remove what a writer killed mid-write left beside the task file; see
        `drop_temp_files_beside`."""
        return drop_temp_files_beside(self.path, self._lock)

    # --- plumbing --------------------------------------------------------------------------

    def _guarded(self, task_id: str, decide: Any) -> bool:
        with self._transaction() as document:
            change = decide(self._find(document, task_id))
            if change is None:
                return False
            self._apply(document, task_id, change)
            return True

    def _find(self, document: TaskDocument, task_id: str) -> Task:
        index = document.position(task_id)
        if index is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.label}")
        return document.tasks[index]

    def _apply(self, document: TaskDocument, task_id: str, change: changes.Changes) -> Task:
        index = document.position(task_id)
        assert index is not None
        return document.update(index, change)

    def _read(self) -> TaskDocument:
        identity: _FileIdentity | None = None
        try:
            with open(self.path, "rb") as f:
                identity = _identity(os.fstat(f.fileno()))
                if self._cached is not None and self._cached[0] == identity:
                    return self._cached[1]
                data = f.read()
        except FileNotFoundError:
            data = b""  # removed since detection: an empty backlog, re-created on add
        except OSError as exc:
            raise BackendError(f"{self.label}: cannot read: {exc.strerror or exc}") from None
        document = self.parse(data)
        self._cached = (identity, document) if identity is not None else None
        return document

    @contextmanager
    def _transaction(self) -> Iterator[TaskDocument]:
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise BackendError(
                f"{self.label}: another process held {self.label}.lock for over "
                f"{LOCK_TIMEOUT_S:.0f}s"
            ) from None
        try:
            document = self._read()
            self._cached = None  # changed in place from here on: cached again once written
            document.changed = False
            yield document
            if document.changed:
                write_atomic(self.path, document.to_bytes(), mode=_file_mode(self.path))
            # Under the lock nobody else has replaced the file since: this is its content.
            try:
                self._cached = (_identity(os.stat(self.path)), document)
            except FileNotFoundError:  # an empty backlog that is still not written
                self._cached = None
        finally:
            self._lock.release()


def drop_temp_files_beside(path: Path, lock: filelock.BaseFileLock) -> list[Path]:
    """The temp files `write_atomic` makes beside ``path`` (``.<name>.*.tmp``) exist only
    while a writer holds ``lock``: with the lock taken, any that is there was left by a writer
    killed mid-write, and is removed. Skipped (nothing removed) while someone holds the lock.
    Returns the files removed."""
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return []
    removed = []
    try:
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                continue
            removed.append(tmp)
    finally:
        lock.release()
    return removed


def next_task_id(existing: Sequence[str]) -> str:
    """``<prefix>-<n>``: the prefix most ids already use, n one past the highest in use."""
    numbered: list[tuple[str, int]] = []
    for task_id in existing:
        prefix, _, number = task_id.rpartition("-")
        if prefix and number.isdigit():
            numbered.append((prefix, int(number)))
    if not numbered:
        return f"{DEFAULT_ID_PREFIX}-1"
    prefix = Counter(p for p, _ in numbered).most_common(1)[0][0]
    highest = max(n for p, n in numbered if p == prefix)
    taken = set(existing)
    candidate = highest + 1
    while f"{prefix}-{candidate}" in taken:
        candidate += 1
    return f"{prefix}-{candidate}"


# (inode, size, mtime, ctime): every write of a task file, by cub or anyone else, gives at
# least one of them a new value (cub and editors replace the file; an in-place edit moves the
# times).
_FileIdentity = tuple[int, int, int, int]


def _identity(st: os.stat_result) -> _FileIdentity:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _file_mode(path: Path) -> int:
    # Keep the permissions the user gave the file; write_atomic would otherwise make it 0600.
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return NEW_FILE_MODE
