"""What runs did to a file-backed backlog, kept out of the task file.

A task file is the user's: usually committed, shared with a team, and in an ``--in-place`` run
sitting in the agent's work dir. So runs never write it. Claims, attempt counts, retries,
failures, closes and the notes runs add are kept in a ledger in cub's state directory (out of
the agent's reach, never in git), and every read of the backlog is the file with the ledger
laid over it. `git status` shows nothing a run did; `cub tasks list` shows all of it.

Each ledger entry remembers, per key, the value the file had when a run changed it (``base``).
An entry applies only while the file still has that value: a person who edits a key in the file
(reopens a task, say) overrides what runs recorded for that key, and a task removed from the
file takes its entries with it. Changes made by hand (`cub tasks add`, `close`, `note`) go to
the file itself, and take the task's ledger entry with them into it.

A run changes the ledger twice per task, each time replacing a file atomically; a ledger that
grew with every task runs ever did would make each of those writes as large as the backlog's
history. So a ledger is two files: the ledger file, holding the entries changed lately, and its
archive (``archive/<name>``), holding the rest. A change rewrites the ledger file only; once
that holds more than `FOLD_AT` entries they are folded into the archive, rewritten whole, and
the ledger file starts again empty. An entry in the ledger file replaces the archive's (an
empty one removes it). Either file is replaced atomically, in this order, so a crash between
the two leaves entries in both, which reads the same.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from cub.records.durable import make_private_dir, write_atomic
from cub.records.location import repository_top, state_dir

LEDGER_DIR = "backlog"
ARCHIVE_DIR = "archive"
# Entries the ledger file holds before they are folded into the archive: a ledger of fewer
# tasks is the one file it always was.
FOLD_AT = 256


class KeyChange(msgspec.Struct, omit_defaults=True):
    """One key of one task as runs left it. UNSET ``base``: the file did not have the key;
    UNSET ``value``: runs removed it."""

    base: Any | msgspec.UnsetType = msgspec.UNSET
    value: Any | msgspec.UnsetType = msgspec.UNSET


class LedgerFile(msgspec.Struct, omit_defaults=True):
    task_file: str
    tasks: dict[str, dict[str, KeyChange]] = msgspec.field(default_factory=dict)
    version: int = 1


_decoder = msgspec.json.Decoder(LedgerFile)
_encoder = msgspec.json.Encoder()


def ledger_path(task_file: Path, project_dir: Path) -> Path:
    """The ledger for ``task_file``: one per task file, shared by every worktree of the
    repository (they hold copies of the same backlog at the same relative path)."""
    task_file = task_file.absolute()
    top = repository_top(task_file.parent)
    if top is not None and task_file.is_relative_to(top):
        key = "%".join(part.replace("%", "%25") for part in task_file.relative_to(top).parts)
    else:
        key = "outside-" + hashlib.sha256(os.fsencode(task_file)).hexdigest()[:32]
    return state_dir(project_dir) / LEDGER_DIR / f"{key}.json"


def archive_path(ledger: Path) -> Path:
    """Where the entries folded out of the ledger file at ``ledger`` are kept."""
    return ledger.parent / ARCHIVE_DIR / ledger.name


def ledgers_hold_claims(project_dir: Path) -> bool:
    """Whether any of the project's ledgers records a task as claimed: cheap enough for
    `cub status` to ask before deciding whether there is anything to settle."""
    directory = state_dir(project_dir) / LEDGER_DIR
    try:
        ledgers = [*directory.glob("*.json"), *(directory / ARCHIVE_DIR).glob("*.json")]
    except OSError:
        return False
    for path in ledgers:
        try:
            if b'"value":"in_progress"' in path.read_bytes():
                return True
        except OSError:
            continue
    return False


def read_ledger(path: Path, task_file: str) -> LedgerFile:
    """The ledger at ``path``; an empty one when there is none, or when what is there does
    not parse (a crash cannot leave that: it is replaced atomically; only a person can)."""
    try:
        return decode_ledger(path.read_bytes(), task_file)
    except FileNotFoundError:
        return LedgerFile(task_file=task_file)


def decode_ledger(data: bytes, task_file: str) -> LedgerFile:
    """A ledger file's content (empty bytes: no ledger) as `read_ledger` reads it."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return LedgerFile(task_file=task_file)


def write_ledger(path: Path, ledger: LedgerFile) -> bytes:
    """Replace the ledger at ``path``; returns the bytes written."""
    make_private_dir(path.parent)
    data = _encoder.encode(ledger)
    write_atomic(path, data)
    return data


Entry = dict[str, KeyChange]


class Ledger(NamedTuple):
    """A backlog's ledger as read: its entries (the ledger file's laid over the archive's),
    and both files' content, for `save`."""

    path: Path
    tasks: dict[str, Entry]
    recent: LedgerFile  # the ledger file's entries
    recent_bytes: bytes  # and its bytes (b"" when there is none)
    archive: LedgerFile

    @classmethod
    def read(cls, path: Path, task_file: str) -> Ledger:
        recent_bytes = _bytes_of(path)
        recent = decode_ledger(recent_bytes, task_file)
        archive = decode_ledger(_bytes_of(archive_path(path)), task_file)
        tasks = {**archive.tasks, **recent.tasks}
        for task_id, entry in recent.tasks.items():
            if not entry:
                del tasks[task_id]  # removed since it was archived
        return cls(path, tasks, recent, recent_bytes, archive)

    def set(self, task_id: str, entry: Entry) -> None:
        """The task's entry from now on; an empty one: the task has none."""
        if entry:
            self.tasks[task_id] = entry
            self.recent.tasks[task_id] = entry
            return
        self.tasks.pop(task_id, None)
        if task_id in self.archive.tasks:
            self.recent.tasks[task_id] = {}
        else:
            self.recent.tasks.pop(task_id, None)

    def save(self) -> Ledger:
        """Write what `set` changed; returns the ledger as it now is on disk."""
        if len(self.recent.tasks) <= FOLD_AT:
            return self._replace(recent_bytes=write_ledger(self.path, self.recent))
        archive = LedgerFile(task_file=self.recent.task_file, tasks=dict(self.tasks))
        write_ledger(archive_path(self.path), archive)
        recent = LedgerFile(task_file=self.recent.task_file)
        return self._replace(
            recent=recent, recent_bytes=write_ledger(self.path, recent), archive=archive
        )


def _bytes_of(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def applicable(original: dict[str, Any], entry: dict[str, KeyChange]) -> dict[str, Any]:
    """The changes of ``entry`` that still apply onto the file's ``original`` object, in the
    form `cub.tasks.changes.apply` takes (``None`` removes a key)."""
    result: dict[str, Any] = {}
    for key, change in entry.items():
        if original.get(key, msgspec.UNSET) == change.base:
            result[key] = None if change.value is msgspec.UNSET else change.value
    return result


def entry_between(original: dict[str, Any], current: dict[str, Any]) -> dict[str, KeyChange]:
    """The ledger entry that turns the file's ``original`` object into ``current``."""
    entry: dict[str, KeyChange] = {}
    for key in original.keys() | current.keys():
        base = original.get(key, msgspec.UNSET)
        value = current.get(key, msgspec.UNSET)
        if base != value:
            entry[key] = KeyChange(base=base, value=value)
    return entry
