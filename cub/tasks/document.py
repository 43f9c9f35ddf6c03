"""A parsed task file, and how to tell whether the files it was read from are still the same.

A backend keeps the document it last read or wrote (`cub.tasks.file_store`), with the
identities of the task file and the ledger's files it was read from: while none of them has a
new identity, the document is what a fresh read would give.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cub.errors import BackendError
from cub.tasks import changes
from cub.tasks.ledger import Ledger
from cub.tasks.model import Task

# (inode, size, mtime, ctime): every write of a task file, by cub or anyone else, gives at
# least one of them a new value (cub and editors replace the file; an in-place edit moves the
# times).
FileIdentity = tuple[int, int, int, int]
Identities = tuple[FileIdentity | None, ...]  # (task file, ledger file, ledger archive)


class TaskDocument(Protocol):
    """A parsed task file that can change tasks in place and serialise itself again."""

    tasks: list[Task]
    # Set by update() and append() when the serialised file would differ.
    changed: bool
    # Positions of the tasks update() and append() changed.
    touched: set[int]
    # The id of a task to take out of the file, set by `FileTaskBackend.remove`.
    removed: str | None

    def position(self, task_id: str) -> int | None: ...

    def update(self, index: int, change: changes.Changes) -> Task: ...

    def append(self, raw: dict[str, Any]) -> Task: ...

    def location(self, index: int) -> str: ...

    def depends_on_spelling(self) -> str: ...

    def raw(self, index: int) -> dict[str, Any]: ...

    def original(self, index: int) -> dict[str, Any] | None: ...

    def replace(self, index: int, raw: dict[str, Any]) -> Task: ...

    def remove(self, index: int) -> None: ...

    def to_bytes(self) -> bytes: ...


class CachedRead(NamedTuple):
    """What one read of a backlog found, or one transaction left."""

    identities: Identities
    document: TaskDocument
    ledger: Ledger  # as laid over the document


def identities_of(*paths: Path) -> Identities:
    return tuple(_identity_of(path) for path in paths)


def read_bytes(path: Path) -> bytes:
    """The file's content; empty when there is no such file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _identity_of(path: Path) -> FileIdentity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackendError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
