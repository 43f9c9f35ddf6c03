"""The beads backend: tasks live in beads and are read and changed through the ``bd`` CLI.

Beads has no ``retry``/``failed`` statuses and no attempt counter, so cub keeps those in
``beads-state.json`` in its state directory (attempts per task, and which ``blocked`` issues cub
itself marked failed), out of the agent's reach like the rest of cub's state. Claims are
serialised by a lock file there: two cub runs never pick the same issue, though a person using
``bd`` directly is outside that lock.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from cub.config.messages import describe_validation_error
from cub.errors import BackendError, InvalidTaskId, TaskFileError, TaskNotFound
from cub.records.durable import make_private_dir, write_atomic
from cub.records.location import state_dir
from cub.tasks import changes
from cub.tasks.file_store import drop_temp_files_beside
from cub.tasks.integrity import dependency_problems
from cub.tasks.ledger import LEDGER_DIR
from cub.tasks.lock import BacklogLock, LockTimeout
from cub.tasks.model import (
    DEFAULT_PRIORITY,
    ISSUE_TYPES,
    STATUSES,
    Task,
    TaskEntry,
    epic_members,
    validate_task_id,
)
from cub.tasks.selection import pick_task, ready_tasks, unmet_dependencies

BD_TIMEOUT_S = 30.0
LOCK_TIMEOUT_S = 30.0
_CANDIDATES_CHECKED = 5


class CubState(msgspec.Struct, kw_only=True):
    """What cub tracks about beads issues that beads itself has no field for."""

    attempts: dict[str, int] = msgspec.field(default_factory=dict)
    failed: dict[str, str] = msgspec.field(default_factory=dict)


class BeadsBackend:
    kind = "beads"

    def __init__(self, project_dir: Path, bd: str = "bd") -> None:
        self.project_dir = project_dir
        self.path = project_dir / ".beads"
        self.bd = bd
        state = state_dir(project_dir) / LEDGER_DIR
        self._state_path = state / "beads-state.json"
        self._lock = BacklogLock(state / "beads.lock", timeout=LOCK_TIMEOUT_S)

    def describe(self) -> str:
        return "beads (.beads/ via bd)"

    # --- reading ---------------------------------------------------------------------------

    def load(self) -> list[Task]:
        return self._load(self._read_state())

    def _load(self, state: CubState) -> list[Task]:
        issues = self._run_json("list")
        if not isinstance(issues, list):
            raise BackendError(f"`{self.bd} list --json` did not return a JSON array")
        return [self._to_task(issue, state) for issue in issues]

    def get(self, task_id: str) -> Task:
        validate_task_id(task_id)
        return self._show(task_id, self._read_state())

    def problems(self) -> list[str]:
        return [
            f"beads {task_id}: {message}" for task_id, message in dependency_problems(self.load())
        ]

    def epic_tasks(self, epic_id: str) -> list[Task]:
        return epic_members(self.load(), epic_id)

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
        with self._locked():
            state = self._read_state()
            tasks = self._load(state)
            if task_id is not None:
                picked = pick_task(tasks, task_id=task_id, exclude=exclude)
                candidates = [picked] if picked else []
            else:
                ready = [
                    t for t in ready_tasks(tasks, epic=epic, label=label) if t.id not in exclude
                ]
                candidates = ready[:_CANDIDATES_CHECKED]
            for candidate in candidates:
                # `bd list` may leave dependencies out; `bd show` has them all, so confirm.
                full = self._show(candidate.id, state)
                if task_id is None and unmet_dependencies(full, tasks):
                    continue
                change = changes.claim(full, run_id)
                self._update(full.id, status="in_progress", assignee=run_id)
                state.attempts[full.id] = change["attempts"]
                state.failed.pop(full.id, None)
                self._write_state(state)
                return self._show(full.id, state)
            return None

    def release(
        self, task_id: str, run_id: str, note: str | None = None, *, uncount: bool = False
    ) -> bool:
        with self._locked():
            if not self._guarded(task_id, run_id, "open", note):
                return False
            if uncount:
                state = self._read_state()
                if state.attempts.get(task_id, 0) > 0:
                    state.attempts[task_id] -= 1
                    self._write_state(state)
            return True

    def mark_retry(self, task_id: str, run_id: str, note: str | None = None) -> bool:
        # Beads has no `retry` status: the issue goes back to open; cub's attempt count stays.
        return self._guarded(task_id, run_id, "open", f"retry: {note}" if note else "retry")

    def mark_failed(self, task_id: str, run_id: str, reason: str) -> bool:
        with self._locked():
            if not self._guarded(task_id, run_id, "blocked", f"failed: {reason}"):
                return False
            state = self._read_state()
            state.failed[task_id] = reason
            self._write_state(state)
            return True

    def reopen(self, task_id: str) -> Task:
        validate_task_id(task_id)
        with self._locked():
            self._update(task_id, status="open")
            state = self._read_state()
            state.failed.pop(task_id, None)
            state.attempts.pop(task_id, None)
            self._write_state(state)
            return self._show(task_id, state)

    def fail_closed(self, task_id: str, reason: str) -> bool:
        """Closed → failed (beads: blocked, with cub's failed mark), whoever closed it."""
        with self._locked():
            state = self._read_state()
            task = self._show(task_id, state)
            note = changes.append_note(task.notes, f"failed: {reason}")
            self._update(task_id, status="blocked", notes=note)
            state.failed[task_id] = reason
            self._write_state(state)
        return True

    def close(self, task_id: str, run_id: str, reason: str) -> Task:
        validate_task_id(task_id)
        self._run_json("close", task_id, "--reason", reason)
        return self._show(task_id, self._read_state())

    def update_notes(self, task_id: str, note: str) -> Task:
        state = self._read_state()
        task = self._show(task_id, state)
        self._update(task_id, notes=changes.append_note(task.notes, note))
        return self._show(task_id, state)

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
        args = ["create", title, "-d", description, "-p", str(priority), "-t", issue_type]
        if labels:
            args += ["-l", ",".join(labels)]
        if depends_on:
            args += ["--deps", ",".join(f"blocks:{dep}" for dep in depends_on)]
        if parent:
            args += ["--parent", parent]
        if acceptance_criteria:
            text = acceptance_criteria
            args += ["--acceptance", text if isinstance(text, str) else "\n".join(text)]
        if task_id:
            args += ["--id", task_id]
        created = self._run_json(*args)
        return self._to_task(_single(created, "create"), self._read_state())

    # --- plumbing --------------------------------------------------------------------------

    def _guarded(self, task_id: str, run_id: str, status: str, note: str | None) -> bool:
        with self._locked():
            state = self._read_state()
            task = self._show(task_id, state)
            if not changes.owned_by(task, run_id):
                return False
            fields: dict[str, str] = {"status": status, "assignee": ""}
            if note:
                fields["notes"] = changes.append_note(task.notes, note)
            self._update(task_id, **fields)
            return True

    def _show(self, task_id: str, state: CubState) -> Task:
        try:
            shown = self._run_json("show", task_id)
        except BackendError as exc:
            if "not found" in str(exc).lower():
                raise TaskNotFound(f"no task with id {task_id!r} in beads") from None
            raise
        return self._to_task(_single(shown, "show"), state)

    def _update(self, task_id: str, **fields: str) -> None:
        args = ["update", task_id]
        for name, value in fields.items():
            args += [f"--{name}", value]
        self._run_json(*args)

    def _to_task(self, issue: Any, state: CubState) -> Task:
        entry = _issue_entry(issue)
        task = entry.to_task()
        attempts = state.attempts.get(task.id, task.attempts)
        status = "failed" if task.status == "blocked" and task.id in state.failed else task.status
        return msgspec.structs.replace(task, attempts=attempts, status=status)

    def _run_json(self, *args: str) -> Any:
        argv = [self.bd, *args, "--json"]
        shown = shlex.join(argv)
        try:
            done = subprocess.run(
                argv,
                cwd=self.project_dir,
                capture_output=True,
                text=True,
                errors="replace",  # its JSON is checked below; anything else is only shown
                timeout=BD_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise BackendError(f"`{self.bd}` (beads) is not installed or not on PATH") from None
        except subprocess.TimeoutExpired:
            raise BackendError(f"`{shown}` did not finish within {BD_TIMEOUT_S:.0f}s") from None
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1:] or ["no error output"]
            raise BackendError(f"`{shown}` failed (exit {done.returncode}): {detail[0]}")
        try:
            return msgspec.json.decode(done.stdout or "null")
        except (msgspec.DecodeError, RecursionError) as exc:
            raise BackendError(f"`{shown}` printed something that is not JSON: {exc}") from None

    def drop_stale_temp_files(self) -> list[Path]:
        """Remove what a writer killed mid-write left beside beads-state.json."""
        if not self._state_path.parent.is_dir():
            return []
        return drop_temp_files_beside(self._state_path, self._lock)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        make_private_dir(self._state_path.parent)
        try:
            self._lock.acquire()
        except LockTimeout:
            raise BackendError(
                f"{self._lock.lock_file}: held by another process for over {LOCK_TIMEOUT_S:.0f}s"
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def _read_state(self) -> CubState:
        try:
            return msgspec.json.decode(self._state_path.read_bytes(), type=CubState)
        except FileNotFoundError:
            return CubState()
        except (msgspec.DecodeError, RecursionError, OSError) as exc:
            raise BackendError(f"{self._state_path}: cannot read: {exc}") from None

    def _write_state(self, state: CubState) -> None:
        write_atomic(self._state_path, msgspec.json.encode(state))


def _single(result: Any, command: str) -> Any:
    # Some bd versions answer show/create with one object, others with a one-element array.
    if isinstance(result, list):
        if not result:
            raise BackendError(f"`bd {command} --json` returned an empty array")
        return result[0]
    return result


def _issue_entry(issue: Any) -> TaskEntry:
    """A bd issue → TaskEntry, tolerating the fields beads has and cub does not."""
    if not isinstance(issue, dict):
        raise BackendError(f"bd returned an issue that is not an object: {issue!r:.80}")
    issue = dict(issue)
    # Statuses and types beads has but cub does not know are never run: map them to the
    # nearest never-selected value instead of refusing the whole backlog.
    if issue.get("status") not in STATUSES:
        issue["status"] = "blocked"
    if issue.get("issue_type") not in ISSUE_TYPES:
        issue["issue_type"] = "gate"
    deps = issue.get("dependencies")
    if isinstance(deps, list):
        issue["dependencies"] = [d for dep in deps if (d := _dependency(dep))]
    try:
        entry = msgspec.convert(issue, TaskEntry)
    except msgspec.ValidationError as exc:
        problem = describe_validation_error(exc, root_type=TaskEntry, data=issue)
        raise TaskFileError(f"beads issue {issue.get('id')!r}: {problem.render()}") from None
    try:
        # As in the task files: an id becomes a directory name, so it is refused on reading,
        # not found unusable after it has been claimed.
        validate_task_id(entry.id)
    except InvalidTaskId as exc:
        raise TaskFileError(f"beads issue: {exc}") from None
    return entry


def _dependency(dep: Any) -> dict[str, str] | None:
    """Export format ``{depends_on_id, type}`` and show format ``{id, dependency_type}``."""
    if isinstance(dep, str):
        return {"depends_on_id": dep, "type": "blocks"}
    if not isinstance(dep, dict):
        return None
    target = dep.get("depends_on_id") or dep.get("id")
    kind = dep.get("type") or dep.get("dependency_type") or "blocks"
    if not isinstance(target, str):
        return None
    return {"depends_on_id": target, "type": str(kind)}
