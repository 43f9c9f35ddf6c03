"""Finding a project's root, and setting one up for cub (`cub init`)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from cub.config.load import PROJECT_CONFIG, default_config_dict
from cub.records.durable import write_atomic
from cub.tasks.jsonl import DEFAULT_PATH as TASKS_PATH

RUNLOOP_TEMPLATE = Path(__file__).parent / "templates" / "runloop.md"
# The runs' worktrees stay out of git; the task file itself is meant to be committed. (Records,
# locks and the backlog's ledger are kept out of the tree altogether: `cub.records.location`.)
GITIGNORE_ENTRIES = (".cub/worktrees/",)
SHARED_FILE_MODE = 0o644


def init_project(root: Path) -> list[str]:
    """Create what cub needs under ``root``; never overwrite. Returns what was created."""
    created: list[str] = []
    cub_dir = root / ".cub"
    if not cub_dir.is_dir():
        cub_dir.mkdir(parents=True)
        created.append(".cub/")
    config_text = msgspec.json.format(msgspec.json.encode(default_config_dict()), indent=2)
    if _create(root / PROJECT_CONFIG, config_text + b"\n"):
        created.append(str(PROJECT_CONFIG))
    if _create(root / TASKS_PATH, b""):
        created.append(str(TASKS_PATH))
    # The default system prompt ships with cub; a copy in .cub/ is the project's to edit.
    runloop = cub_dir / "runloop.md"
    if RUNLOOP_TEMPLATE.is_file() and _create(runloop, RUNLOOP_TEMPLATE.read_bytes()):
        created.append(".cub/runloop.md")
    created += [f".gitignore: {entry}" for entry in _add_to_gitignore(root / ".gitignore")]
    return created


def _create(path: Path, data: bytes) -> bool:
    if path.exists():
        return False
    write_atomic(path, data, mode=SHARED_FILE_MODE)
    return True


def _add_to_gitignore(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    present = {_normalise(line) for line in text.splitlines()}
    missing = [entry for entry in GITIGNORE_ENTRIES if _normalise(entry) not in present]
    if not missing:
        return []
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{entry}\n" for entry in missing)
    write_atomic(path, text.encode("utf-8"), mode=_mode(path))
    return missing


def _normalise(line: str) -> str:
    # "/.cub/runs", ".cub/runs/" and ".cub/runs" ignore the same thing here.
    return line.strip().strip("/")


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return SHARED_FILE_MODE
