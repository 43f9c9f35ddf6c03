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
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import msgspec

from cub.records.durable import make_private_dir, write_atomic
from cub.records.location import repository_top, state_dir

LEDGER_DIR = "backlog"


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


def ledgers_hold_claims(project_dir: Path) -> bool:
    """Whether any of the project's ledgers records a task as claimed: cheap enough for
    `cub status` to ask before deciding whether there is anything to settle."""
    try:
        ledgers = list((state_dir(project_dir) / LEDGER_DIR).glob("*.json"))
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
        return _decoder.decode(path.read_bytes())
    except (FileNotFoundError, msgspec.DecodeError, RecursionError):
        return LedgerFile(task_file=task_file)


def write_ledger(path: Path, ledger: LedgerFile) -> None:
    make_private_dir(path.parent)
    write_atomic(path, _encoder.encode(ledger))


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
