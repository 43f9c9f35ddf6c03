"""Scripted agents for tests: small real programs that print, read stdin, ignore signals, fork
grandchildren that escape with setsid(), or exit while a grandchild holds their stdout."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from cub.agents.supervisor import AgentProcess, AgentRequest

TEST_TOKEN_VAR = "AGENT_TEST_TOKEN"
"""Set (by a fixture) to a per-test token; every agent a test starts inherits it, so processes
a test leaves behind can be found even after they escaped with setsid()."""


def write_script(path: Path, body: str) -> Path:
    """An executable script. Without a ``#!`` line it is Python run by this interpreter."""
    body = textwrap.dedent(body).lstrip("\n")
    if not body.startswith("#!"):
        body = f"#!{sys.executable}\n{body}"
    path.write_text(body)
    path.chmod(0o755)
    return path


def agent_request(
    tmp_path: Path,
    script: Path,
    *,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    redact: Callable[[str], str] = lambda text: text,
) -> AgentRequest:
    """A request that runs ``script`` in ``tmp_path`` and logs to ``tmp_path/harness.log``."""
    return AgentRequest(
        argv=(str(script),),
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        stdin=stdin,
        log_path=tmp_path / "harness.log",
        redact=redact,
    )


# ----------------------------------------------------------------------------- agents

_GRANDCHILD = """
import os, time
if os.fork() == 0:
    os.setsid()  # out of the agent's session and process group
    {ignore}
    with open({pid_file!r} + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename({pid_file!r} + ".tmp", {pid_file!r})
    time.sleep(60)
    os._exit(0)
while not os.path.exists({pid_file!r}):
    time.sleep(0.01)
"""


def _ignoring(signals: tuple[str, ...]) -> str:
    """One line of Python that ignores the named signals."""
    return "; ".join(f"signal.signal(signal.{name}, signal.SIG_IGN)" for name in signals) or "pass"


def sleeping_agent(
    path: Path,
    ready_file: Path,
    *,
    ignore: tuple[str, ...] = (),
    exit_on_sigint: int | None = None,
    grandchild_pid_file: Path | None = None,
    grandchild_ignores: tuple[str, ...] = (),
) -> Path:
    """An agent that prints a line, touches ``ready_file`` and sleeps 60 s.

    ``ignore`` names signals it ignores (e.g. ("SIGINT", "SIGTERM")); ``exit_on_sigint``
    makes it exit with that code on SIGINT; ``grandchild_pid_file`` makes it first fork a
    grandchild that calls setsid(), ignores ``grandchild_ignores`` and writes its pid there.
    """
    parts = ["import os, signal, sys, time", _ignoring(ignore)]
    if exit_on_sigint is not None:
        parts.append(f"signal.signal(signal.SIGINT, lambda *_: sys.exit({exit_on_sigint}))")
    if grandchild_pid_file is not None:
        parts.append(
            _GRANDCHILD.format(
                pid_file=str(grandchild_pid_file), ignore=_ignoring(grandchild_ignores)
            )
        )
    parts.append(
        f"""
print("agent started", flush=True)
open({str(ready_file)!r}, "w").close()
time.sleep(60)
"""
    )
    return write_script(path, "\n".join(parts))


def stubborn_agent(path: Path, ready_file: Path, grandchild_pid_file: Path) -> Path:
    """Ignores SIGINT and SIGTERM, and has a setsid() grandchild that ignores them too."""
    return sleeping_agent(
        path,
        ready_file,
        ignore=("SIGINT", "SIGTERM", "SIGHUP"),
        grandchild_pid_file=grandchild_pid_file,
        grandchild_ignores=("SIGINT", "SIGTERM", "SIGHUP"),
    )


def orphaning_agent(path: Path, grandchild_pid_file: Path) -> Path:
    """Forks a setsid() grandchild that sleeps 60 s holding the agent's stdout, then exits 0."""
    return write_script(
        path,
        "import os, signal, sys, time\n"
        + _GRANDCHILD.format(pid_file=str(grandchild_pid_file), ignore="pass")
        + 'print("agent done", flush=True)\n',
    )


# ---------------------------------------------------------------------------- waiting


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)
    return path.read_text()


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.01)


def collect_lines(agent: AgentProcess, timeout: float = 15.0) -> list[str]:
    """Every line the agent prints, until it has finished."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while not agent.finished():
        if time.monotonic() > deadline:
            raise AssertionError(f"agent pid={agent.pid} did not finish within {timeout}s")
        lines += agent.read_lines(0.2)
    return lines + agent.read_lines(0)


def is_alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_with_token(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``AGENT_TEST_TOKEN=token``."""
    wanted = f"{TEST_TOKEN_VAR}={token}"
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if wanted.encode() in f.read().split(b"\0"):
                    found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found
