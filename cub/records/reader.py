"""Reading recorded runs back: the final record when there is one, else the live status."""

from __future__ import annotations

from pathlib import Path

import msgspec

from cub.records.schemas import RunRecord, StatusRecord
from cub.records.store import RUNS_DIR

_run_decoder = msgspec.json.Decoder(RunRecord)
_status_decoder = msgspec.json.Decoder(StatusRecord)


class RunNotFound(LookupError):
    pass


def runs_dir(project_dir: Path) -> Path:
    return project_dir / RUNS_DIR


def run_dirs(project_dir: Path) -> list[Path]:
    root = runs_dir(project_dir)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]


def load_record(run_dir: Path) -> RunRecord | StatusRecord | None:
    """run.json if the run has ended, else status.json; None if neither is readable."""
    for name, decoder in (("run.json", _run_decoder), ("status.json", _status_decoder)):
        try:
            return decoder.decode((run_dir / name).read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, msgspec.DecodeError):
            continue
    return None


def resolve_run(project_dir: Path, run_id: str) -> Path:
    root = runs_dir(project_dir)
    if run_id == "latest":
        link = root / "latest"
        if not link.exists():
            raise RunNotFound(f"no runs recorded in {root}")
        return link.resolve()
    if "/" in run_id or run_id in (".", "..") or not (root / run_id).is_dir():
        raise RunNotFound(f"no run {run_id!r} in {root}")
    return root / run_id


def list_records(project_dir: Path) -> list[RunRecord | StatusRecord]:
    """Every readable run, newest first."""
    records = [r for d in run_dirs(project_dir) if (r := load_record(d)) is not None]
    records.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
    return records
