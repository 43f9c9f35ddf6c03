"""`--sandbox`: the run happens inside a Docker container, supervised by the host run.

The host run validates (engine, image, backlog), prepares a workspace (a clone on the run's
branch: see `workspace`), fires `supervise` and starts the container, whose command is
`cub run` again: the inner run, a child of the host run (`--parent-run-id`) with full records of
its own. The host polls the container, streams its output to `container.log`, mirrors the inner
run's counters into its own status, and forwards a first interrupt to the container (SIGINT to
cub inside, through the container's init). When the container has ended, the inner records are
copied under the host run (`inner/<inner_id>/`), the inner backlog's results applied to the host
backlog, the branch fetched back, and the host run ends according to the inner run's state.

A second interrupt kills the container at once; the inner run, which then has no run.json, is
finalised by crash recovery from the host (a dead container no longer holds the inner run's
lock), and the host run ends `force_killed`.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.config.load import user_config_path
from cub.errors import SetupFailed, one_line
from cub.lifecycle.machine import signal_word
from cub.modes.sandbox import results
from cub.modes.sandbox import workspace as ws
from cub.modes.sandbox.container import (
    LogPump,
    container_env,
    container_state,
    inner_command,
    kill_container,
    run_kwargs,
)
from cub.modes.sandbox.container import (
    client as docker_client,
)
from cub.modes.sandbox.results import Ending
from cub.records.location import runs_dir
from cub.records.reader import read_status_json
from cub.records.schemas import RunRecord
from cub.tasks.file_store import FileTaskBackend
from cub.workspace.branches import branch_name_for
from cub.workspace.worktree import worktree_path

if TYPE_CHECKING:
    from cub.lifecycle.handle import Run
    from cub.lifecycle.plan import RunPlan
    from cub.tasks.model import Task

POLL_S = 0.2
# After a forwarded interrupt, the inner run gets its grace, plus this for SIGTERM, SIGKILL and
# its records, before the host kills the container.
STOP_MARGIN_S = 15.0
# A host-side guard on top of --timeout, for an inner run that cannot stop by itself.
TIMEOUT_MARGIN_S = 60.0
ENGINE_LOST_S = 10.0
KILL_WAIT_S = 2.0


def prepare_sandbox(run: Run, plan: RunPlan) -> None:
    """Check what the sandbox needs, writing nothing: a git repository, a task file inside the
    project, and the image in the engine. The workspace and the container come when the run
    starts supervising (`supervise_sandbox`)."""
    import docker  # optional (the sandbox extra), and slow to import

    if plan.git_root is None:
        raise SetupFailed(
            "sandbox_failed",
            "--sandbox needs a git repository: the work comes back as commits on a branch",
        )
    backend = plan.backend
    if not isinstance(backend, FileTaskBackend):
        what = backend.describe() if backend is not None else "no backlog"
        raise SetupFailed(
            "sandbox_failed",
            f"--sandbox needs a task file (.cub/tasks.jsonl or "
            f"prd.json) to copy into the container, not {what}",
        )
    project, repo = plan.project_dir.resolve(), plan.git_root.resolve()
    task_file = backend.path.resolve()
    if not task_file.is_relative_to(project) or not project.is_relative_to(repo):
        raise SetupFailed(
            "sandbox_failed",
            f"--sandbox needs the task file inside the project; {task_file} is outside {project}",
        )
    image = plan.config.sandbox.image
    try:
        docker_client(30).images.get(image)
    except docker.errors.ImageNotFound:
        raise SetupFailed(
            "sandbox_failed", f"image {image} not found; run `cub sandbox build`"
        ) from None
    except Exception as exc:
        raise SetupFailed(
            "sandbox_failed", f"cannot inspect image {image}: {one_line(exc)}"
        ) from exc


def supervise_sandbox(run: Run) -> None:
    """From `preparing` to the run's end: workspace, container, supervision, results."""
    plan = run.plan
    assert plan is not None and plan.git_root is not None and plan.backend is not None
    ctx, request = run.ctx, plan.request
    project = plan.project_dir.resolve()
    branch = branch_name_for(
        ctx.run_id,
        task_id=request.task,
        epic=request.epic,
        gh_issue=None,
        issue_slug=None,
        prefix=plan.config.branch.prefix,
    )
    sandbox = SandboxRun(
        run=run,
        plan=plan,
        client=docker_client(30),
        image=plan.config.sandbox.image,
        inner_id=f"{ctx.run_id[:122]}-inner",
        branch=branch,
        project=project,
        repo=plan.git_root.resolve(),
        task_file=plan.backend.path.resolve(),
        workspace=worktree_path(project, ctx.run_id),  # the same place as --worktree's
    )
    run.finishers.append(sandbox.finish)
    sandbox.supervise()


@dataclass
class SandboxRun:
    run: Run
    plan: RunPlan
    client: Any
    image: str
    inner_id: str
    branch: str
    project: Path
    repo: Path
    task_file: Path
    workspace: Path
    container: Any = None
    pump: LogPump | None = None
    before: dict[str, Task] = field(default_factory=dict)
    workspace_made: bool = False
    config_home: Path | None = None  # the user's cub config, copied into the workspace
    exit_code: int | None = None
    oom_killed: bool = False
    inner: RunRecord | None = None
    done: set[str] = field(default_factory=set)  # collection steps already taken

    @property
    def inner_project(self) -> Path:
        return self.workspace / self.project.relative_to(self.repo)

    @property
    def inner_dir(self) -> Path:
        return runs_dir(self.inner_project) / self.inner_id

    @property
    def copied_dir(self) -> Path | None:
        store = self.run.ctx.store
        return store.run_dir / "inner" / self.inner_id if store is not None else None

    def note(self, kind: str, **data: Any) -> None:
        self.run.machine.note(kind, data=data)

    # -- the run --------------------------------------------------------------------------------

    def supervise(self) -> None:
        run = self.run
        try:
            try:
                self._make_workspace()
                if run.watch.requested:
                    ending = self._stopped_before_start(run.watch.first or signal.SIGINT)
                    run.end_with(*ending)
                    return
                self._start()
            except SetupFailed as exc:
                run.end_with("setup_failed", exc.reason_code, str(exc))
                return
            assert self.container is not None
            run.machine.supervise(
                container_id=self.container.id, image=self.image, inner_run_id=self.inner_id
            )
            run.end_with(*self._wait())
        except BaseException:
            # A second interrupt, or a crash: the container dies now; what it leaves is
            # recorded.
            self._kill_now()
            raise

    def _stopped_before_start(self, signum: int) -> Ending:
        self.run.machine.interrupt(signal=signum)
        word = signal_word(signum) or "sigint"
        return ("stopped", word, f"stopped on {word.upper()} before the sandbox started")

    def _make_workspace(self) -> None:
        if self.workspace.exists():
            raise SetupFailed(
                "sandbox_failed", f"cannot create the sandbox workspace: {self.workspace} exists"
            )
        self.workspace_made = True  # from here on the directory is this run's to remove
        created = ws.create_workspace(
            self.repo, self.workspace, self.branch, self.plan.request.from_branch
        )
        self.run.ctx.branch = self.branch
        host = self._host_backend()
        store = self.run.ctx.store
        if store is not None:
            # The snapshot comes from the recorded copy, so both are the same backlog.
            at_start = ws.keep_backlog_at_start(host, store.run_dir)
            self.before = ws.snapshot(type(host)(at_start, self.project))
        else:
            self.before = ws.snapshot(host)
        copied = ws.copy_project_files(self.project, self.inner_project, host)
        self.config_home = ws.copy_user_config(user_config_path(_environ()), self.workspace)
        self.note(
            "sandbox_workspace",
            path=str(self.workspace),
            branch=self.branch,
            branch_created=created,
            copied=copied,
        )

    def _start(self) -> None:
        import docker  # optional (the sandbox extra), and slow to import

        ctx, config = self.run.ctx, self.plan.config.sandbox
        env = container_env(
            config, _environ(), ws.git_identity(self.repo, _environ()), self.config_home
        )
        kwargs = run_kwargs(
            image=self.image,
            command=inner_command(self.plan.request, self.inner_id, ctx.run_id),
            workspace=self.workspace,
            working_dir=self.inner_project,
            env=env,
            config=config,
            name=f"cub-{ctx.run_id[:100]}-{time.time_ns() % 0x10000:04x}",
            labels={"cub.run_id": ctx.run_id, "cub.inner_run_id": self.inner_id},
        )
        try:
            self.container = self.client.containers.create(**kwargs)
            self.container.start()
        except docker.errors.DockerException as exc:
            raise SetupFailed(
                "sandbox_failed", f"cannot start a container from {self.image}: {one_line(exc)}"
            ) from exc
        store = ctx.store
        if store is not None:
            self.pump = LogPump(
                self.container.id,
                store.run_dir / "container.log",
                store.redact,
                lambda line: self.run.observer.message(f"  │ {line}"),
            )
            self.pump.start()
        self.note(
            "sandbox_started",
            container_id=self.container.id,
            name=kwargs["name"],
            image=self.image,
            inner_run_id=self.inner_id,
            # For recovery, should this host die while the container runs.
            inner_dir=str(self.inner_dir),
            keep=self.plan.request.sandbox_keep,
            network=config.network,
            memory=config.memory,
            cpus=config.cpus,
            pids_limit=config.pids_limit,
        )

    def _wait(self) -> Ending:
        """Poll the container until it ends; forward a first interrupt to it."""
        watch, loop = self.run.watch, self.plan.config.loop
        started = time.monotonic()
        run_deadline = (
            started + loop.timeout + loop.grace + TIMEOUT_MARGIN_S
            if loop.timeout is not None
            else None
        )
        stop_deadline: float | None = None
        next_mirror = 0.0
        while True:
            state = self._state()
            if state.get("Status") in ("exited", "dead", "removed"):
                break
            now = time.monotonic()
            if watch.requested and stop_deadline is None:
                self._forward(watch.first or signal.SIGINT)
                stop_deadline = now + loop.grace + STOP_MARGIN_S
            elif stop_deadline is not None and now > stop_deadline:
                return self._killed(
                    "force_kill",
                    "grace_expired",
                    f"the sandboxed run did not stop within {loop.grace:g}s of "
                    f"{self._signal_name()}; its container was killed",
                )
            if run_deadline is not None and now > run_deadline:
                return self._killed(
                    "children_failed",
                    "sandbox_failed",
                    "the sandboxed run did not end within its --timeout; its container was killed",
                )
            if now >= next_mirror:
                self._mirror_status()
                next_mirror = now + 1.0
            if stop_deadline is None:
                watch.wake.wait(POLL_S)
            else:
                time.sleep(POLL_S)
        self.exit_code = state.get("ExitCode")
        self.oom_killed = bool(state.get("OOMKilled"))
        self.note("sandbox_exited", exit_code=self.exit_code, oom_killed=self.oom_killed)
        self._collect()
        return self._ending()

    def _killed(self, trigger: str, reason_code: str, reason: str) -> Ending:
        """Kill the container before it is done, keep what it left, and end so."""
        self._kill_container()
        self._collect()
        return (trigger, reason_code, reason + self._kept())

    def _forward(self, signum: int) -> None:
        """The first interrupt: stopping, and the same signal to cub inside the container."""
        self.run.machine.interrupt(signal=signum)
        name = signal.Signals(signum).name
        try:
            self.container.kill(signal=name)
        except Exception as exc:  # it may have ended just now; the poll will see that
            self.note("sandbox_signal_failed", signal=name, error=one_line(exc))
            return
        self.note("sandbox_signal", signal=name)

    def _signal_name(self) -> str:
        return (signal_word(self.run.watch.first) or "sigint").upper()

    def _mirror_status(self) -> None:
        """The inner run's live counters, in the host's status.json."""
        status = read_status_json(self.inner_dir)
        if status is None:
            return
        results.take_counters(self.run.ctx, status.tasks, status.budget)
        self.run.machine.write_status()

    def _state(self) -> dict[str, Any]:
        return container_state(self.container, POLL_S, ENGINE_LOST_S)

    def _kill_container(self) -> None:
        """SIGKILL now, and the state it ended in (the main client may be mid-request)."""
        if self.container is None:
            return
        state = kill_container(self.container.id, KILL_WAIT_S)
        if state is not None:
            self.exit_code = state.get("ExitCode")
            self.oom_killed = bool(state.get("OOMKilled"))
        self.note("sandbox_killed", container_id=self.container.id, exit_code=self.exit_code)

    def _kill_now(self) -> None:
        """The container must not outlive the host run: kill it, keep what it left."""
        self._kill_container()
        try:
            self._collect()
        except Exception as exc:
            self.note("sandbox_collect_failed", error=one_line(exc))
        self.finish(self.run, "", "", "")

    def _collect(self) -> None:
        results.collect(self)

    def _ending(self) -> Ending:
        return results.ending(self)

    def _kept(self) -> str:
        return results.kept(self)

    def finish(self, run: Run, state: str, reason_code: str, reason: str) -> None:
        """Last, before the terminal state: remove the container (unless --sandbox-keep) and
        the workspace (the branch stays). Safe to call twice."""
        results.clean_up(self)

    def _host_backend(self) -> Any:
        assert self.plan.backend is not None
        return self.plan.backend


def _environ() -> dict[str, str]:
    return dict(os.environ)
