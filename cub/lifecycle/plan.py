"""A validated invocation: everything a run will use, decided before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cub.lifecycle.request import RunRequest

if TYPE_CHECKING:
    from cub.agents.registry import HarnessChoice
    from cub.config.schema import Config
    from cub.tasks.backend import TaskBackend


@dataclass
class RunPlan:
    """A validated invocation: what the run will use."""

    request: RunRequest
    project_dir: Path
    config: Config
    config_sources: list[str]
    git_root: Path | None
    backend: TaskBackend | None
    harness: HarnessChoice | None
    direct_prompt: str | None
