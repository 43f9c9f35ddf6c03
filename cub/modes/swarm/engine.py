"""The children of `--parallel N --sandbox --engine swarm`: each a one-replica Docker Swarm
service, placed by the swarm on any node.

The child contract is an image, an environment, a remote, a ref to start from, and two refs
back: the child clones ``refs/cub/base/<child_run_id>`` (the run branch's head when it starts,
pushed there by the parent), works on its own branch, and pushes that branch and its whole
record (``refs/cub/records/<child_run_id>``, `cub.run.remote`). Nothing else moves between
the machines: no bind mount, no shared disk. The parent claims each task for its child before
the service exists and settles it from the child's record once it has fetched it. A live
child's usage, for the budgets the children share, is what it last printed to its service's
log (`USAGE_MARK`).

Stopping: a first interrupt scales every service to zero, so the swarm sends each container
SIGTERM and after the grace period (``stop_grace_period``) SIGKILL; the child records its own
`interrupted` ending and pushes it. Killing (a second interrupt) removes the services at once.
A node that goes `down` takes its children with it: the engine watches node states and ends
those children itself, naming the node.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from cub.config.load import ENV_VARS
from cub.errors import CubError, SetupFailed, one_line
from cub.modes.parallel.child import child_summary
from cub.modes.parallel.children import child_flags
from cub.modes.sandbox.container import client, memory_bytes
from cub.modes.sandbox.workspace import git_identity
from cub.modes.swarm.contract import (
    BASE_REF_PREFIX,
    LABEL_PARENT,
    LABEL_RUN,
    LABEL_TASK,
    SECRET_PREFIX,
    USAGE_MARK,
)
from cub.records.location import runs_dir
from cub.records.reader import read_run_json
from cub.records.schemas import BudgetUse, ChildRun, RunRecord, TaskAttempt
from cub.workspace.git import GitError, git
from cub.workspace.records_ref import records_ref, write_tree

if TYPE_CHECKING:
    from cub.lifecycle.handle import Run
    from cub.lifecycle.plan import RunPlan
    from cub.modes.parallel.child import ChildSpec
    from cub.tasks.backend import TaskBackend

# A swarm stop waits about two seconds before its SIGTERM, and the record is pushed after it.
_STOP_MARGIN_S = 15.0
_POLL_EVERY_S = 0.5
_NODES_EVERY_S = 1.0
_USAGE_EVERY_S = 1.0
_ENDED = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})


def open_engine(run: Run, env: Mapping[str, str]) -> SwarmEngine:
    """The engine of a prepared run; a swarm or remote that cannot be used ends the run's
    setup (`sandbox_failed`)."""
    plan = run.plan
    assert plan is not None and plan.backend is not None
    try:
        engine = SwarmEngine(plan, plan.backend, run.work_dir or plan.project_dir, env)
    except Exception as exc:
        raise SetupFailed("sandbox_failed", f"cannot use the swarm: {one_line(exc)}") from exc
    run.machine.note("swarm", data={"remote": engine.remote, "image": engine.image})
    return engine


def swarm_manager_problem() -> str | None:
    """Why DOCKER_HOST is not a swarm manager cub can use, or None."""
    try:
        info = client(10).info()
    except Exception as exc:
        return f"no Docker engine answered: {one_line(exc)}"
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        return "the engine at DOCKER_HOST is not part of a swarm (docker swarm init)"
    if not swarm.get("ControlAvailable"):
        return "the engine at DOCKER_HOST is a swarm worker, not a manager"
    return None


@dataclass
class SwarmChild:
    """One child run: its service, and what became of it."""

    engine: SwarmEngine
    task_id: str
    run_id: str
    order: int
    branch: str
    service: Any
    started_at: float = field(default_factory=time.monotonic)
    signalled: bool = False
    record: RunRecord | None = None
    node: str | None = None  # the hostname of the node the swarm placed it on
    lost: str | None = None  # why it ended without ending (its node went down)
    removed: bool = False  # its service is removed (at its end, or killed)
    killed: bool = False  # removed by the parent before it could end by itself
    gone: bool = False  # stopped, and its container has exited
    problem: str | None = None  # why no record came back
    _task: dict[str, Any] = field(default_factory=dict)
    _polled: float = 0.0
    _usage: BudgetUse | None = None
    _usage_read: float = 0.0

    def where(self) -> dict[str, object]:
        return {"service": self.service.id, "engine": "swarm"}

    def _refresh(self, force: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if self.removed or (not force and now - self._polled < _POLL_EVERY_S):
            return self._task
        self._polled = now
        with contextlib.suppress(Exception):
            tasks = self.service.tasks()
            if tasks:
                self._task = max(tasks, key=lambda t: t.get("CreatedAt", ""))
            elif self._task:
                # Scaled to zero (stopped): the swarm drops the task once its container is gone.
                self.gone = True
        node_id = self._task.get("NodeID")
        if node_id:
            self.node = self.engine.node_name(node_id)
            if self.engine.node_down(node_id) and self.lost is None:
                self.lost = f"its node {self.node} was lost (the swarm marks it down)"
        return self._task

    def ended(self) -> bool:
        task = self._refresh()
        return self.removed or self.gone or self.lost is not None or _task_state(task) in _ENDED

    def has_started(self) -> bool:
        return _task_state(self._refresh()) == "running"

    def live_budget(self) -> BudgetUse | None:
        """What it has used so far, as it last printed it (`cub.run.remote.UsageReporter`)."""
        now = time.monotonic()
        if self.removed or now - self._usage_read < _USAGE_EVERY_S:
            return self._usage
        self._usage_read = now
        reports = _marked_lines(self.service, USAGE_MARK)
        with contextlib.suppress(msgspec.DecodeError, ValueError, AttributeError, TypeError):
            if reports:
                fields = msgspec.json.decode(reports[-1][len(USAGE_MARK) :].strip())
                self._usage = BudgetUse(
                    tokens_used=int(fields.get("tokens_used") or 0),
                    cost_usd=fields.get("cost_usd"),
                    cost_incomplete=bool(fields.get("cost_incomplete")),
                )
        return self._usage

    def signal_group(self, sig: int) -> None:
        """The swarm stops a container one way: SIGTERM, SIGKILL after the grace period."""
        with contextlib.suppress(Exception):
            self.service.reload()
            self.service.scale(0)

    def kill(self) -> None:
        self.killed = True
        self._remove()

    def _remove(self) -> None:
        self.removed = True
        with contextlib.suppress(Exception):
            self.service.remove()

    @property
    def exit_code(self) -> int | None:
        status = (self._task.get("Status") or {}).get("ContainerStatus") or {}
        code = status.get("ExitCode")
        return code if isinstance(code, int) and _task_state(self._task) in _ENDED else None

    @property
    def state(self) -> str:
        if self.record is not None:
            return self.record.state
        if self.killed:
            return "force_killed"
        # Its node was lost, or it ended and nothing says how: its record never arrived.
        return "failed"

    def collect(self, project_dir: Path) -> RunRecord | None:
        """Its record and branch, fetched from the remote; its task settled in the parent's
        backlog from that record; its service removed."""
        if self.lost is None:
            self._refresh(force=True)
        self.record = self.engine.fetch_results(self)
        if self.record is None:
            self.problem = self.engine.missing_record(self)  # (its log goes with its service)
        self.engine.settle_task(self)
        if not self.removed:
            self._remove()
        return self.record

    def summary(self) -> ChildRun:
        return child_summary(self, image=self.engine.image, node=self.node, problem=self.problem)


class SwarmEngine:
    """Starts the children of one parent run as services of the swarm DOCKER_HOST manages."""

    stop_margin = _STOP_MARGIN_S

    def __init__(
        self, plan: RunPlan, backend: TaskBackend, work_dir: Path, env: Mapping[str, str]
    ) -> None:
        self.plan = plan
        self.backend = backend
        self.work_dir = work_dir  # the parent's checkout of the run branch
        self.env = env
        self.client = client(60)
        self.remote = plan.request.remote or git(work_dir, "remote", "get-url", "origin")
        self.image = _image_reference(self.client, plan.config.sandbox.image)
        self.secrets: list[tuple[Any, str]] = []
        self.services: list[Any] = []
        self._nodes: dict[str, tuple[str, str]] = {}
        self._nodes_at = 0.0

    # -- nodes --------------------------------------------------------------------------------

    def _node_states(self) -> dict[str, tuple[str, str]]:
        now = time.monotonic()
        if now - self._nodes_at >= _NODES_EVERY_S:
            self._nodes_at = now
            with contextlib.suppress(Exception):
                self._nodes = {
                    n.id: (
                        n.attrs.get("Description", {}).get("Hostname", n.id[:12]),
                        n.attrs.get("Status", {}).get("State", "unknown"),
                    )
                    for n in self.client.nodes.list()
                }
        return self._nodes

    def node_name(self, node_id: str) -> str:
        return self._node_states().get(node_id, (node_id[:12], ""))[0]

    def node_down(self, node_id: str) -> bool:
        return self._node_states().get(node_id, ("", "ready"))[1] == "down"

    # -- starting -----------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> SwarmChild:
        task_id, run_id = spec.task_id, spec.run_id
        self.backend.claim_next(run_id, epic=None, label=None, task_id=task_id)
        try:
            service = self._create_service(task_id, run_id, spec.parent_id, spec.limits)
        except Exception as exc:
            self.backend.release(task_id, run_id, note=f"not started: {one_line(exc)}")
            raise CubError(f"cannot start the child for {task_id}: {one_line(exc)}") from exc
        self.services.append(service)
        branch = f"{self.plan.config.branch.prefix}{run_id}"
        return SwarmChild(self, task_id, run_id, spec.order, branch=branch, service=service)

    def _create_service(self, task_id: str, run_id: str, parent_id: str, limits: list[str]) -> Any:
        from docker.types import RestartPolicy  # (optional: the sandbox extra)

        base = BASE_REF_PREFIX + run_id
        git(self.work_dir, "push", "--quiet", "--force", self.remote, f"HEAD:{base}", timeout=600)
        config = self.plan.config.sandbox
        argv = ["python3", "-m", "cub", "run", "--task", task_id, "--name", run_id]
        argv += ["--parent-run-id", parent_id, "--clone-url", self.remote, "--clone-ref", base]
        argv += ["--main-ok", *child_flags(self.plan), *limits]
        labels = {LABEL_RUN: run_id, LABEL_PARENT: parent_id, LABEL_TASK: task_id}
        grace = self.plan.config.loop.grace + 5.0  # cub's own stop ladder fits inside
        service = self.client.services.create(
            self.image,
            command=argv,
            name=f"cub-{run_id}"[:63],
            labels=labels,
            container_labels=labels,
            env=[f"{k}={v}" for k, v in self._environment().items()],
            secrets=self._secret_references(parent_id),
            workdir="/tmp",
            init=True,
            networks=["host"],
            restart_policy=RestartPolicy(condition="none"),
            stop_grace_period=int(grace * 1e9),
            resources=_resources(config.cpus, memory_bytes(config.memory), config.pids_limit),
        )
        return service

    def _environment(self) -> dict[str, str]:
        """What the child needs besides secrets: cub's own settings and a git identity (the
        host's, from its environment or the repository's config)."""
        env = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", "IS_SANDBOX": "1"}
        env |= {name: self.env[name] for name in ENV_VARS if self.env.get(name)}
        return env | git_identity(self.work_dir, dict(self.env))

    def _secret_references(self, parent_id: str) -> list[Any]:
        """The allow-listed variables (API keys) as Docker secrets, made once per run."""
        from docker.types import SecretReference  # (optional: the sandbox extra)

        if not self.secrets:
            for name in self.plan.config.sandbox.env:
                value = self.env.get(name)
                if value:
                    secret = self.client.secrets.create(
                        name=f"cub-{parent_id}-{name}"[:64],
                        data=value.encode(),
                        labels={LABEL_PARENT: parent_id},
                    )
                    self.secrets.append((secret, name))
        return [
            SecretReference(secret.id, secret.name, filename=f"{SECRET_PREFIX}{name}")
            for secret, name in self.secrets
        ]

    # -- results ------------------------------------------------------------------------------

    def fetch_results(self, child: SwarmChild) -> RunRecord | None:
        """The child's record (written out as its run directory here) and its branch."""
        return fetch_child(self.work_dir, self.remote, self.plan.project_dir, child.run_id)

    def missing_record(self, child: SwarmChild) -> str:
        if child.lost is not None:
            return child.lost
        if child.killed:
            return "killed before it could push its record"
        log = self._log_tail(child)
        return f"it pushed no record (exit {child.exit_code}){': ' + log if log else ''}"

    def _log_tail(self, child: SwarmChild) -> str:
        lines = _marked_lines(child.service, "cub:", stderr=True)
        # What went wrong around the run (its push, its clone) before how the run ended.
        lines.sort(key=lambda line: "could not push" in line or "cannot clone" in line)
        return " ".join(lines[-1].split())[:300] if lines else ""

    def settle_task(self, child: SwarmChild) -> None:
        """The parent's backlog learns how the child's attempt went (the child settled it in
        its own clone's): closed, failed, or back to open."""
        outcome = _attempt_outcome(self.plan.project_dir, child)
        try:
            if outcome == "succeeded" and child.record is not None:
                self.backend.close(
                    child.task_id, child.run_id, reason=f"done in cub run {child.run_id}"
                )
            elif outcome in ("failed", "stuck", "timeout", "verify_failed"):
                self.backend.mark_failed(
                    child.task_id, child.run_id, reason=f"{outcome} in cub run {child.run_id}"
                )
            else:
                note = child.problem
                self.backend.release(
                    child.task_id, child.run_id, note=note, uncount=outcome is None
                )
        except (CubError, OSError):
            pass  # the claim stays, named for its child: recovery settles it later

    def close(self) -> None:
        """No service or secret of the run outlives it."""
        for service in self.services:
            with contextlib.suppress(Exception):
                service.remove()
        for secret, _ in self.secrets:
            with contextlib.suppress(Exception):
                secret.remove()


def fetch_child(repo: Path, remote: str, project_dir: Path, run_id: str) -> RunRecord | None:
    """What a child pushed: its record, written out as its run directory under the project's
    runs, and the branch that record names, fetched into ``repo``. None if it pushed nothing."""
    target = runs_dir(project_dir) / run_id
    ref = records_ref(run_id)
    try:
        git(repo, "fetch", "--quiet", "--no-tags", remote, f"+{ref}:{ref}", timeout=600)
    except GitError:
        return None
    if not target.exists():
        write_tree(repo, ref, target)
    record = read_run_json(target)
    if record is not None and record.branch:
        branch = f"refs/heads/{record.branch}"
        with contextlib.suppress(GitError):
            git(repo, "fetch", "--quiet", "--no-tags", remote, f"+{branch}:{branch}", timeout=600)
    return record


def _resources(cpus: float, memory: int, pids: int) -> Any:
    """The sandbox's limits for each child's container. (The SDK has no argument for the pid
    limit, which the API takes since version 1.41, so it is set in the request itself.)"""
    from docker.types import Resources  # (optional: the sandbox extra)

    resources = Resources(cpu_limit=int(cpus * 1e9), mem_limit=memory)
    resources["Limits"]["Pids"] = pids
    return resources


def _marked_lines(service: Any, mark: str, *, stderr: bool = False) -> list[str]:
    """The lines of the service's recent log that start with ``mark`` (after the stream's
    8-byte frame header, when there is one): cub's own lines. An agent's output shown with
    --stream is indented, so an agent cannot pass its text for cub's. Empty if the log cannot
    be read."""
    try:
        chunks = service.logs(stdout=True, stderr=stderr, tail=50)
        text = b"".join(chunks).decode(errors="replace")
    except Exception:
        return []
    return [line[line.find(mark) :] for line in text.splitlines() if line.find(mark) in (0, 8)]


def _task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def _attempt_outcome(project_dir: Path, child: SwarmChild) -> str | None:
    path = runs_dir(project_dir) / child.run_id / "tasks" / child.task_id / "task.json"
    try:
        return msgspec.json.decode(path.read_bytes(), type=TaskAttempt).outcome
    except (OSError, msgspec.DecodeError, RecursionError):
        return None


def _image_reference(engine: Any, image: str) -> str:
    """A local image by its id (a tag would send every node to a registry first); an image
    from a registry by its name, for each node to pull."""
    with contextlib.suppress(Exception):
        found = engine.images.get(image)
        if not found.attrs.get("RepoDigests"):
            return str(found.id)
    return image
