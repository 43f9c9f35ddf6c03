"""Operations shared by the file-backed task stores (``tasks.jsonl``, ``prd.json``).

Every change is a transaction: take the exclusive lock (kept in cub's state directory, beside the
backlog's ledger), re-read the file and the ledger inside it (another process may have changed
them since we last looked), apply the change onto the task's JSON object, and replace what
changed atomically: the ledger for what runs do, the file for what a person does by hand (see
`cub.tasks.ledger`). Readers need no lock: a replaced file is always whole.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cub.config.messages import relative_label
from cub.errors import BackendError, TaskInputError, TaskNotFound
from cub.memory import built_outside_gc
from cub.records.durable import make_private_dir, write_atomic
from cub.tasks import changes
from cub.tasks.document import (
    CachedRead,
    Identities,
    TaskDocument,
    identities_of,
    read_bytes,
)
from cub.tasks.index import BacklogIndex
from cub.tasks.integrity import dependency_problems
from cub.tasks.ledger import Ledger, applicable, archive_path, entry_between, ledger_path
from cub.tasks.lock import BacklogLock, LockTimeout
from cub.tasks.model import (
    DEFAULT_PRIORITY,
    Task,
    depends_on_key,
    new_task_dict,
    now_iso,
    validate_task_id,
)
from cub.tasks.selection import pick_task

LOCK_TIMEOUT_S = 30.0
NEW_FILE_MODE = 0o644  # task files are meant to be committed and shared
DEFAULT_ID_PREFIX = "task"


class FileTaskBackend:
    """Base of the JSONL and prd.json backends; subclasses only parse their format."""

    kind = "file"

    def __init__(self, path: Path, project_dir: Path, *, by_hand: bool = False) -> None:
        self.path = path
        self.project_dir = project_dir
        self.label = relative_label(path, project_dir)
        # `cub tasks close` and `note` change the file itself; a run's changes, and claims
        # whoever makes them, go to the ledger.
        self.by_hand = by_hand
        self.ledger_path = ledger_path(path, project_dir)
        self._lock = BacklogLock(self.ledger_path.with_suffix(".lock"), timeout=LOCK_TIMEOUT_S)
        # The last document read or written (the file with the ledger laid over it), with
        # the identities of the files: a loop claims and closes task after task, and
        # re-parsing a large backlog for each change would cost more than the change.
        self._cached: CachedRead | None = None
        # The selection index of the cached document, updated by each change made to it.
        self._index: tuple[TaskDocument, BacklogIndex] | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.label}"

    def parse(self, data: bytes) -> TaskDocument:
        raise NotImplementedError

    # --- reading ---------------------------------------------------------------------------

    def load(self) -> list[Task]:
        return list(self._read().tasks)  # a copy: the document itself may be cached and change

    def get(self, task_id: str) -> Task:
        return self._find(self._read(), task_id)

    def epic_tasks(self, epic_id: str) -> list[Task]:
        return self._index_of(self._read()).epic_tasks(epic_id)

    def may_hold_claims(self) -> bool:
        """False only when no task can be claimed: neither the file nor the ledger says
        ``in_progress`` anywhere (nor has an escape that could spell it). A cheap look, for
        recovery to skip parsing a backlog nobody holds anything of."""
        for path in (self.path, self.ledger_path, archive_path(self.ledger_path)):
            try:
                if _may_say_in_progress(path):
                    return True
            except FileNotFoundError:
                continue
            except OSError:
                return True  # the full read reports the problem
        return False

    def snapshot_bytes(self) -> bytes:
        """The backlog as cub sees it (the file with the ledger laid over it), as the
        content of a task file: what a sandboxed run gets as its copy."""
        return self._read().to_bytes()

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
            if task_id is None:
                index = self._index_of(document)
                task = index.first_ready(epic=epic, label=label, exclude=exclude)
            else:
                at = document.position(task_id)
                named = [] if at is None else [document.tasks[at]]
                task = pick_task(named, task_id=task_id, exclude=exclude)
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
        with self._transaction(to_file=self.by_hand) as document:
            task = self._find(document, task_id)
            return self._apply(document, task_id, changes.close(task, run_id, reason))

    def reopen(self, task_id: str) -> Task:
        """A person's change: always written into the file (which may already say ``open``:
        only the ledger said otherwise)."""
        with self._transaction(to_file=True) as document:
            task = self._find(document, task_id)
            reopened = self._apply(document, task_id, changes.reopen(task))
            document.touched.add(self._position(document, task_id))
            return reopened

    def edit(self, task_id: str, fields: dict[str, Any]) -> Task:
        """A person's edit of ``fields`` (``None`` removes a key), written into the file; the
        dependencies and parent it names must exist, and no task may depend on itself."""
        with self._transaction(to_file=True) as document:
            self._find(document, task_id)
            change = dict(fields)
            if "depends_on" in change:
                deps = change.pop("depends_on") or []
                if task_id in deps:
                    raise TaskInputError(f"--depends-on: {task_id} cannot depend on itself")
                raw = document.raw(self._position(document, task_id))
                spelling = depends_on_key(raw)
                change[spelling] = deps or None
                change["depends_on" if spelling == "dependsOn" else "dependsOn"] = None
                _check_dependencies(document, deps)
            change["updated_at"] = now_iso()
            edited = self._apply(document, task_id, change)
            document.touched.add(self._position(document, task_id))
            return edited

    def remove(self, task_id: str) -> Task:
        """Take a task out of the file (and its ledger entry with it); refused while other
        tasks depend on it or a run holds it."""
        with self._transaction(to_file=True) as document:
            task = self._find(document, task_id)
            needed_by = [t.id for t in document.tasks if task_id in t.depends_on]
            if needed_by:
                raise TaskInputError(
                    f"{task_id} is a dependency of {', '.join(needed_by)}: edit those first"
                )
            if task.status == "in_progress":
                raise TaskInputError(
                    f"{task_id} is claimed by {task.assignee}: stop that run or "
                    f"`cub tasks release {task_id}` first"
                )
            document.removed = task_id
            return task

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
        with self._transaction(to_file=self.by_hand) as document:
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
        with self._transaction(to_file=True) as document:
            if task_id is not None and document.position(task_id) is not None:
                raise TaskInputError(f"{self.label}: a task with id {task_id!r} already exists")
            _check_dependencies(document, depends_on)
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
        """Remove what a writer killed mid-write left beside the task file and the ledger;
        see `drop_temp_files_beside`."""
        paths = (self.path, self.ledger_path, archive_path(self.ledger_path))
        return [tmp for path in paths for tmp in drop_temp_files_beside(path, self._lock)]

    # --- plumbing --------------------------------------------------------------------------

    def _guarded(self, task_id: str, decide: Any) -> bool:
        with self._transaction() as document:
            change = decide(self._find(document, task_id))
            if change is None:
                return False
            self._apply(document, task_id, change)
            return True

    def _position(self, document: TaskDocument, task_id: str) -> int:
        index = document.position(task_id)
        assert index is not None
        return index

    def _find(self, document: TaskDocument, task_id: str) -> Task:
        index = document.position(task_id)
        if index is None:
            raise TaskNotFound(f"no task with id {task_id!r} in {self.label}")
        return document.tasks[index]

    def _apply(self, document: TaskDocument, task_id: str, change: changes.Changes) -> Task:
        index = document.position(task_id)
        assert index is not None
        old = document.tasks[index]
        new = document.update(index, change)
        if self._index is not None and self._index[0] is document:
            self._index[1].changed(old, new)
        return new

    def _index_of(self, document: TaskDocument) -> BacklogIndex:
        """The index of ``document``, built on first use: a document read afresh (the file or
        the ledger changed under us) gets a new one."""
        if self._index is None or self._index[0] is not document:
            self._index = (document, BacklogIndex(document.tasks, document.position))
        return self._index[1]

    def _read(self) -> TaskDocument:
        return self._read_cached().document

    def _read_cached(self) -> CachedRead:
        identities = self._identities()
        if self._cached is not None and self._cached.identities == identities:
            return self._cached
        self._index = None  # of the document read before, which is of no use any more
        with built_outside_gc():
            document = self._parse_file()
        ledger = Ledger.read(self.ledger_path, self.label)
        for task_id, entry in ledger.tasks.items():
            index = document.position(task_id)
            original = document.original(index) if index is not None else None
            if index is not None and original is not None:
                document.update(index, applicable(original, entry))
        document.changed, document.touched = False, set()
        read = CachedRead(identities, document, ledger)
        self._cached = read if identities[0] is not None else None
        return read

    def _parse_file(self) -> TaskDocument:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""  # removed since detection: an empty backlog, re-created on add
        except OSError as exc:
            raise BackendError(f"{self.label}: cannot read: {exc.strerror or exc}") from None
        return self.parse(data)

    def _identities(self) -> Identities:
        return identities_of(self.path, self.ledger_path, archive_path(self.ledger_path))

    @contextmanager
    def _transaction(self, *, to_file: bool = False) -> Iterator[TaskDocument]:
        """The backlog as it is now, to change in place; on leaving, what changed is written:
        to the file when ``to_file`` (a person's change), else to the ledger."""
        try:
            make_private_dir(self.ledger_path.parent)
            self._lock.acquire()
        except LockTimeout:
            raise BackendError(
                f"{self.label}: another process held its lock ({self._lock.lock_file}) for "
                f"over {LOCK_TIMEOUT_S:.0f}s"
            ) from None
        try:
            read = self._read_cached()
            document, ledger = read.document, read.ledger
            self._cached = None  # changed in place from here on: cached again once written
            document.changed, document.touched, document.removed = False, set(), None
            yield document
            if (document.touched or document.removed) and to_file:
                self._write_file(document)  # read afresh next time: the file's lines moved
                return
            if document.touched:
                ledger = self._write_ledger(document, ledger)
            # Under the lock nobody else has replaced any of the files since: this is them.
            identities = self._identities()
            written = CachedRead(identities, document, ledger)
            self._cached = written if identities[0] is not None else None
        finally:
            self._lock.release()

    def _write_ledger(self, document: TaskDocument, ledger: Ledger) -> Ledger:
        """Record the touched tasks' changes in ``ledger``, as read with the document; it is
        read again first if its file no longer holds the same bytes (which costs less than
        decoding it, and catches a change its identity could not tell)."""
        if read_bytes(self.ledger_path) != ledger.recent_bytes:
            ledger = Ledger.read(self.ledger_path, self.label)
        for index in document.touched:
            original = document.original(index)
            if original is None:
                raise BackendError(f"{self.label}: a run cannot add tasks")
            task_id = document.tasks[index].id
            ledger.set(task_id, entry_between(original, document.raw(index)))
        return ledger.save()

    def _write_file(self, document: TaskDocument) -> None:
        """Write the touched tasks as they are now (ledger entries included) into the file,
        every other line as it is in the file; their ledger entries are then in the file."""
        on_file = self._parse_file()
        if document.removed is not None:
            index = on_file.position(document.removed)
            assert index is not None
            on_file.remove(index)
            document.touched = {document.position(document.removed) or 0}
        for index in sorted(document.touched):
            if document.removed is not None:
                break
            if index < len(on_file.tasks):
                on_file.replace(index, document.raw(index))
            else:
                on_file.append(document.raw(index))
        if on_file.changed:
            write_atomic(self.path, on_file.to_bytes(), mode=_file_mode(self.path))
        ledger = Ledger.read(self.ledger_path, self.label)
        moved = [document.tasks[i].id for i in document.touched]
        if any(task_id in ledger.tasks for task_id in moved):
            for task_id in moved:
                ledger.set(task_id, {})
            ledger.save()


def _check_dependencies(document: TaskDocument, depends_on: Sequence[str]) -> None:
    """Every task named as a dependency exists: a task waiting for one that does not would
    never be ready."""
    for ref in depends_on:
        validate_task_id(ref)
        if document.position(ref) is None:
            raise TaskInputError(f"--depends-on: no task with id {ref!r} (it would never be ready)")


def drop_temp_files_beside(path: Path, lock: BacklogLock) -> list[Path]:
    """The temp files `write_atomic` makes beside ``path`` (``.<name>.*.tmp``) exist only
    while a writer holds ``lock``: with the lock taken, any that is there was left by a writer
    killed mid-write, and is removed. Skipped (nothing removed) while someone holds the lock.
    Returns the files removed."""
    try:
        lock.acquire(timeout=0)
    except LockTimeout:
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


def _file_mode(path: Path) -> int:
    # Keep the permissions the user gave the file; write_atomic would otherwise make it 0600.
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return NEW_FILE_MODE


_IN_PROGRESS = b"in_progress"
_LOOK_BYTES = 1 << 18


def _may_say_in_progress(path: Path) -> bool:
    """Whether the file at ``path`` holds ``in_progress``, or an escape that could spell it.
    Read a piece at a time into one buffer: a backlog of 100,000 tasks is 40 MB, which would
    otherwise be copied whole to be searched once (twice as long)."""
    keep = len(_IN_PROGRESS) - 1  # the end of a piece, searched again with the next one
    buffer = bytearray(_LOOK_BYTES + keep)
    view = memoryview(buffer)
    start = 0
    with open(path, "rb", buffering=0) as file:
        while n := file.readinto(view[start:]):
            end = start + n
            # (A one-byte search first: far faster than a two-byte one.)
            if buffer.find(_IN_PROGRESS, 0, end) >= 0 or (
                buffer.find(b"\\", 0, end) >= 0 and buffer.find(b"\\u", 0, end) >= 0
            ):
                return True
            start = min(keep, end)
            buffer[:start] = buffer[end - start : end]
    return False
