"""The sandbox's container: its command line, environment and limits, and its log.

Everything about what the container may do is decided here, in one dict passed to the Docker
SDK: the workspace is the only mount (read-write, at the same absolute path as on the host), the
root filesystem is read-only with a tmpfs /tmp as HOME, every capability is dropped,
no-new-privileges is set, memory (without extra swap), cpus and pids are limited, the network is
cut with ``network_mode="none"`` when asked, and only allow-listed variables pass in. An init
process (``init=True``) is PID 1 so that signals sent to the container reach cub inside.
No ulimits are set: values above the machine's hard limits make the container fail to start.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.config.load import ENV_VARS
from cub.errors import CubError, one_line
from cub.records.durable import open_log

if TYPE_CHECKING:
    from cub.config.schema import SandboxConfig
    from cub.lifecycle.request import RunRequest

# Flags of `cub run` passed on to the run inside, as (option, RunRequest attribute).
_VALUE_FLAGS = (
    ("--harness", "harness"),
    ("--harness-cmd", "harness_cmd"),
    ("--model", "model"),
    ("--task", "task"),
    ("--epic", "epic"),
    ("--label", "label"),
    ("--max-iterations", "max_iterations"),
    ("--budget", "budget"),
    ("--budget-tokens", "budget_tokens"),
    ("--budget-tasks", "budget_tasks"),
    ("--timeout", "timeout"),
    ("--task-timeout", "task_timeout"),
    ("--idle-timeout", "idle_timeout"),
    ("--on-failure", "on_failure"),
    ("--grace", "grace"),
    ("--parallel", "parallel"),  # a parallel run inside the container
)
_SWITCHES = (
    ("--once", "once"),
    ("--no-hooks", "no_hooks"),
    ("--no-circuit-breaker", "no_circuit_breaker"),
    ("--stream", "stream"),
    ("--quiet", "quiet"),
)
_IDENTITY = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def inner_command(request: RunRequest, inner_id: str, host_id: str) -> list[str]:
    """`cub run` inside the container: on the workspace's branch as it is, recorded as the
    host run's child, with the user's selection, budgets and timeouts."""
    argv = [
        "python3",
        "-m",
        "cub",
        "run",
        "--name",
        inner_id,
        "--parent-run-id",
        host_id,
        "--use-current-branch",
        "--main-ok",
    ]
    for flag, attr in _VALUE_FLAGS:
        value = getattr(request, attr)
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, attr in _SWITCHES if getattr(request, attr)]
    return argv


def container_env(
    config: SandboxConfig,
    host_env: Mapping[str, str],
    identity: Mapping[str, str],
    config_home: Path | None,
) -> dict[str, str]:
    """Only what the inner run needs: the allow-listed names (API keys) that are set on the
    host, cub's own config variables, and a git identity for the agent's commits."""
    env = {
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # This is the sandbox agents ask for before running unattended as root (Claude Code
        # refuses --dangerously-skip-permissions for uid 0 without it).
        "IS_SANDBOX": "1",
    }
    for name in (*config.env, *ENV_VARS):
        if host_env.get(name):
            env[name] = host_env[name]
    env.update({k: v for k, v in identity.items() if k in _IDENTITY})
    if config_home is not None:
        env["XDG_CONFIG_HOME"] = str(config_home)
    return env


def memory_bytes(memory: str) -> int:
    """``"2g"``/``"512m"``/``"1.5g"``/``"1048576"`` (the config's format) → bytes."""
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    text = memory.strip().lower()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def run_kwargs(
    *,
    image: str,
    command: list[str],
    workspace: Path,
    working_dir: Path,
    env: dict[str, str],
    config: SandboxConfig,
    name: str,
    labels: dict[str, str],
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create``."""
    memory = memory_bytes(config.memory)
    kwargs: dict[str, Any] = {
        "image": image,
        "command": command,
        "name": name,
        "labels": labels,
        "working_dir": str(working_dir),
        "environment": env,
        # The host user's ids, so that what the run writes in the workspace stays the host
        # user's (as root on the host that is 0:0; with every capability dropped, root in the
        # container cannot bypass file permissions anyway).
        "user": f"{os.getuid()}:{os.getgid()}",
        "volumes": {str(workspace): {"bind": str(workspace), "mode": "rw"}},
        "read_only": True,
        "tmpfs": {"/tmp": ""},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": memory,
        "memswap_limit": memory,  # no swap beyond the memory limit
        "nano_cpus": int(config.cpus * 1e9),
        "pids_limit": config.pids_limit,
        "init": True,
        "detach": True,
    }
    if not config.network:
        kwargs["network_mode"] = "none"
    return kwargs


def client(timeout: float | None) -> Any:
    """A client for DOCKER_HOST (or the default socket), with this timeout per request."""
    import docker  # optional (the sandbox extra), and slow to import

    return docker.from_env(timeout=timeout)


def answering_client(timeout: float | None) -> Any:
    """`client`, once the engine has answered a ping; raises whatever the SDK raised."""
    engine = client(timeout)
    engine.ping()
    return engine


def container_state(container: Any, poll_s: float, lost_after_s: float) -> dict[str, Any]:
    """The container's `State`, reloaded; ``{"Status": "removed"}`` when it is gone. An engine
    that does not answer for ``lost_after_s`` is a `CubError`."""
    import docker  # optional (the sandbox extra), and slow to import

    deadline = time.monotonic() + lost_after_s
    while True:
        try:
            container.reload()
            return dict(container.attrs.get("State") or {})
        except docker.errors.NotFound:
            return {"Status": "removed"}
        except Exception as exc:  # the engine is busy or restarting; it may come back
            if time.monotonic() > deadline:
                detail = one_line(exc)
                raise CubError(f"lost the Docker engine while supervising: {detail}") from exc
            time.sleep(poll_s)


def kill_container(container_id: str, wait_s: float) -> dict[str, Any] | None:
    """SIGKILL the container through a new client (another may be stuck mid-request) and wait
    up to ``wait_s`` for it to be down; returns its last `State`, or None if unknown."""
    try:
        api = client(wait_s).api
        api.kill(container_id)
    except Exception:
        return None  # already gone, or the engine is: nothing more to do here
    deadline = time.monotonic() + wait_s
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        try:
            state = dict(api.inspect_container(container_id)["State"])
        except Exception:
            return state
        if state.get("Status") in ("exited", "dead"):
            return state
        time.sleep(0.05)
    return state


def stop_containers_of(run_id: str, *, keep: bool, timeout: float) -> tuple[list[str], str | None]:
    """After the host run ``run_id`` died: kill its containers (found by their label), and
    remove them unless ``keep`` (``--sandbox-keep``). Returns the ids handled and, when the
    engine could not be asked or refused, why."""
    try:
        api = client(timeout).api
        found = api.containers(all=True, filters={"label": f"cub.run_id={run_id}"})
    except Exception as exc:
        return [], one_line(exc)
    handled: list[str] = []
    problem = None
    for container in found:
        try:
            if keep:
                if container.get("State") == "running":
                    api.kill(container["Id"])
            else:
                api.remove_container(container["Id"], force=True)  # force: killed first
            handled.append(container["Id"])
        except Exception as exc:
            problem = one_line(exc)
    return handled, problem


class LogPump:
    """Streams the container's output into ``container.log`` (redacted, line by line) on a
    thread of its own, with a client without a read timeout (an agent may be silent for long);
    each line is also handed to ``echo``."""

    def __init__(
        self,
        container_id: str,
        path: Path,
        redact: Callable[[str], str],
        echo: Callable[[str], None],
    ) -> None:
        self.container_id = container_id
        self.path = path
        self.redact = redact
        self.echo = echo
        self.tail: list[str] = []  # the last lines, for a reason when the inner run left none
        self.thread = threading.Thread(target=self._pump, name="sandbox-log", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _pump(self) -> None:
        pending = b""
        try:
            stream = client(None).api.logs(self.container_id, stream=True, follow=True)
            fd = open_log(self.path)
            with open(fd, "a", encoding="utf-8") as log:
                for chunk in stream:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        self._line(log, raw)
                if pending:
                    self._line(log, pending)
        except Exception:  # the log is a convenience; the run's records do not depend on it
            return

    def _line(self, log: Any, raw: bytes) -> None:
        line = self.redact(raw.decode("utf-8", errors="replace").rstrip("\r"))
        log.write(line + "\n")
        log.flush()
        self.tail = [*self.tail[-19:], line]
        with contextlib.suppress(Exception):
            self.echo(line)
