"""Every agent of a run carries the run's directory in its environment, so that whatever a dead
runner's agents left behind, however far they got from their process tree, is found and
stopped by recovery."""

from __future__ import annotations

from pathlib import Path

from cub.processes import kill_processes_with_env

# Hooks get the same variable (cub.hooks.scripts.ENV_RUN_DIR).
AGENT_RUN_DIR_VAR = "CUB_RUN_DIR"


def agent_env(run_dir: Path) -> dict[str, str]:
    """What every agent of the run in ``run_dir`` gets in its environment."""
    return {AGENT_RUN_DIR_VAR: str(run_dir.resolve())}


def kill_agents_of(run_dir: Path) -> None:
    """Kill every process that carries the run in ``run_dir`` in its agent environment."""
    kill_processes_with_env(f"{AGENT_RUN_DIR_VAR}={run_dir.resolve()}")
