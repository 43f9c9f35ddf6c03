"""A run's record as a git commit, so it can travel with the run's branch through a remote.

A child run on another machine (`--engine swarm`) has no disk in common with its parent: it
commits its whole run directory as the tree of a commit of its own (no parent, no work tree or
index of the repository touched) and pushes it to ``refs/cub/records/<run_id>``; the parent
fetches that ref and writes the tree out as the child's run directory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cub.records.durable import fsync_dir, make_private_dir, write_atomic
from cub.workspace.git import git, git_bytes

RECORDS_REF_PREFIX = "refs/cub/records/"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "cub",
    "GIT_AUTHOR_EMAIL": "cub@localhost",
    "GIT_COMMITTER_NAME": "cub",
    "GIT_COMMITTER_EMAIL": "cub@localhost",
}


def records_ref(run_id: str) -> str:
    return RECORDS_REF_PREFIX + run_id


def commit_directory(repo: Path, directory: Path, message: str) -> str:
    """A parentless commit whose tree holds every file under ``directory``; returns its id."""
    with tempfile.TemporaryDirectory(prefix="cub-records-") as scratch:
        env = {**_IDENTITY, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        tree_of = ("--work-tree", str(directory))
        git(repo, *tree_of, "add", "--all", "--force", "--", ".", env=env)
        tree = git(repo, "write-tree", env=env)
        return git(repo, "commit-tree", tree, "-m", message, env=env)


def write_tree(repo: Path, commit: str, target: Path) -> None:
    """The files of ``commit``'s tree, written under ``target`` (created), each durably."""
    make_private_dir(target)
    listing = git(repo, "ls-tree", "-r", "-z", "--full-tree", commit)
    for entry in filter(None, listing.split("\0")):
        meta, _, name = entry.partition("\t")
        _, kind, blob = meta.split()
        if kind != "blob" or name.startswith("/") or ".." in Path(name).parts:
            continue
        path = target / name
        make_private_dir(path.parent)
        write_atomic(path, git_bytes(repo, "cat-file", "blob", blob))
    fsync_dir(target)
