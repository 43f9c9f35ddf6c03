"""A swarm run whose parent died (SIGKILL, a lost machine): the next cub command stops its
children's services, found by their labels, and fetches what they pushed, so that recovery
records the parent with its children as it would any parallel run's."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from cub.config.load import load_config
from cub.errors import CubError, one_line
from cub.modes.sandbox.container import client
from cub.modes.swarm.contract import LABEL_PARENT
from cub.modes.swarm.engine import fetch_child
from cub.records.schemas import Event
from cub.tasks.backend import open_backend

# How long the children get to record their interruption and push it, once stopped.
_STOP_WAIT_S = 60.0


def gather_children(project_dir: Path, run_dir: Path, events: list[Event]) -> str | None:
    """Stop the dead parent's services, fetch what its children pushed, remove the services
    and secrets. Returns what could not be done: with no manager to ask (DOCKER_HOST unset, the
    swarm down), the children that pushed nothing may still be running and keep their claims,
    for a person to release."""
    swarm = next(e for e in reversed(events) if e.kind == "swarm")
    remote = str(swarm.data.get("remote") or "")
    parent_id = run_dir.name
    children = {
        str(e.data["run_id"]): e.task_id or ""
        for e in events
        if e.kind == "child_started" and isinstance(e.data.get("run_id"), str)
    }
    label = {"label": f"{LABEL_PARENT}={parent_id}"}
    engine: Any = None
    services: list[Any] = []
    problem: str | None = None
    try:
        engine = client(60)
        services = engine.services.list(filters=label)
    except Exception as exc:
        engine, problem = None, one_line(exc)
    _stop(services)
    fetched = {run_id: fetch_child(project_dir, remote, project_dir, run_id) for run_id in children}
    unrecorded = {r: t for r, t in children.items() if fetched[r] is None}
    if engine is None:
        held = ", ".join(sorted(unrecorded.values())) or "none"
        return (
            f"the swarm could not be asked to stop its services ({problem}); tasks of children "
            f"that pushed no record stay claimed: {held}"
        )
    for service in services:
        with contextlib.suppress(Exception):
            service.remove()
    with contextlib.suppress(Exception):
        for secret in engine.secrets.list(filters=label):
            secret.remove()
    _release_unrecorded(project_dir, unrecorded)
    return None


def _stop(services: list[Any]) -> None:
    """Scale each to zero (SIGTERM, then SIGKILL after its grace) and wait for them to end."""
    for service in services:
        with contextlib.suppress(Exception):
            service.reload()
            service.scale(0)
    deadline = time.monotonic() + _STOP_WAIT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if not any(service.tasks() for service in services):
                return
        time.sleep(0.5)


def _release_unrecorded(project_dir: Path, children: dict[str, str]) -> None:
    """A child that pushed no record has no run directory here for recovery to settle its
    claim from: its task goes back to open now."""
    if not children:
        return
    try:
        backend = open_backend(project_dir, load_config(project_dir).config)
        for run_id, task_id in children.items():
            backend.release(
                task_id, run_id, note=f"released by recovery: run {run_id} left no record"
            )
    except (CubError, OSError):
        pass  # the claims stay, named for their runs
