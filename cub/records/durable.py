"""Crash-safe file writes: a file is always either its old whole self or its new whole self."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

DIR_MODE = 0o700
_MKSTEMP_MODE = 0o600  # what tempfile.mkstemp creates files with


def keep_out_of_git(directory: Path) -> None:
    """Make git ignore everything in ``directory``, this file included, with a `.gitignore`
    holding ``*``: `git status` never shows what cub keeps there and `git add -A` (an agent's
    everyday command) never commits it, whatever the project's own .gitignore says."""
    try:
        fd = os.open(directory / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    try:
        os.write(fd, b"# cub's own state: never committed\n*\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def open_log(path: Path) -> int:
    """A descriptor to append to the log at ``path``, created private. Never through a
    symlink: one found there was planted (cub makes none in a run's directory), so it is
    removed and the log created in its place, not wherever the link points."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    path.unlink()
    return os.open(path, flags | os.O_EXCL, 0o600)


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents readable only by the owner: records may hold
    secrets. (``mkdir(parents=True)`` would give the parents the default mode.)

    Each directory created is made durable in its parent, or a file later made durable inside
    it could still be lost with the directory's own entry after a power cut."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        fsync_dir(directory.parent)


def flush_to_disk(fd: int) -> None:
    """fsync a file's contents. ``fdatasync`` is the data-integrity form of fsync: it flushes
    the data and the metadata needed to read it back (the size), and skips timestamps, which
    nothing here relies on: about half the cost of a full fsync on ext4."""
    os.fdatasync(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, sync_dir: bool = True) -> None:
    """Write ``data`` to a unique temp file beside ``path``, fsync it, replace, fsync the dir.

    ``sync_dir=False`` leaves the directory's fsync to the caller's next durable write in the
    same directory: until then a power cut may lose the new name (the file is then its old
    self, or absent), never its content.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            if mode != _MKSTEMP_MODE:  # before the flush, so the mode is durable with the data
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            flush_to_disk(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # Interrupted or failed before the replace: the old file is untouched; drop the temp.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def append_line(path: Path, line: bytes) -> None:
    """Append one newline-terminated line and fsync it before returning."""
    if not line.endswith(b"\n"):
        line += b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        end = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:  # a write cut short (a disk filling up) is continued, or fails
                view = view[os.write(fd, view) :]
        except OSError:
            # Whole lines or none: a torn line would glue itself to the next one written.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
        flush_to_disk(fd)
    finally:
        os.close(fd)


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
