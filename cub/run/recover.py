"""Recovery with every mode's part wired in: what a dead sandboxed run left (its container, its
work in the sandbox's workspace) is salvaged, and a dead swarm run's children are stopped and
their records fetched from its remote."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.recovery.runs import ModeParts, recover_runs

if TYPE_CHECKING:
    from cub.lifecycle.context import RunContext
    from cub.records.schemas import Event


def recover_project(project_dir: Path) -> list[str]:
    """Finalise every orphaned run of the project and settle stranded claims (one message
    each)."""
    modes = {
        "sandbox": ModeParts(salvage=_salvage_sandbox),
        "parallel": ModeParts(gather=_gather_swarm_children),
    }
    return recover_runs(project_dir, modes)


def _salvage_sandbox(
    project_dir: Path, run_dir: Path, ctx: RunContext, events: list[Event]
) -> tuple[dict[str, Any], str]:
    # Imported only when a dead sandboxed run is found: the docker SDK is slow to import.
    from cub.modes.sandbox.recovery import recover_sandbox

    return recover_sandbox(project_dir, run_dir, ctx, events)


def _gather_swarm_children(project_dir: Path, run_dir: Path, events: list[Event]) -> str | None:
    if not any(e.kind == "swarm" for e in events):
        return None  # a parallel run on this machine: its children's records are here already
    from cub.modes.swarm.recovery import gather_children  # (as above)

    return gather_children(project_dir, run_dir, events)
