"""Recovery with every mode's part wired in: what a dead sandboxed run left (its container, its
work in the sandbox's workspace) is salvaged too."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.recovery.runs import recover_runs

if TYPE_CHECKING:
    from cub.lifecycle.context import RunContext
    from cub.records.schemas import Event


def recover_project(project_dir: Path) -> list[str]:
    """Finalise every orphaned run of the project and settle stranded claims (one message
    each)."""
    return recover_runs(project_dir, salvage={"sandbox": _salvage_sandbox})


def _salvage_sandbox(
    project_dir: Path, run_dir: Path, ctx: RunContext, events: list[Event]
) -> tuple[dict[str, Any], str]:
    # Imported only when a dead sandboxed run is found: the docker SDK is slow to import.
    from cub.modes.sandbox.recovery import recover_sandbox

    return recover_sandbox(project_dir, run_dir, ctx, events)
