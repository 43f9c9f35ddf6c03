"""The sandbox's parts that need no engine: the inner command line, the container's environment
and settings, and the task sync back onto the host backlog."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cub.config.schema import SandboxConfig
from cub.lifecycle.request import RunRequest
from cub.modes.sandbox.container import container_env, inner_command, memory_bytes, run_kwargs
from cub.modes.sandbox.workspace import snapshot, sync_tasks
from cub.tasks.jsonl import JsonlBackend
from tests.helpers.cli import read_tasks, task, write_tasks


def test_the_inner_command_passes_the_selection_and_limits_but_not_the_sandbox() -> None:
    request = RunRequest(
        sandbox=True,
        no_network=True,
        sandbox_keep=True,
        harness="command",
        harness_cmd="python3 ./agent.py",
        task="t1",
        budget=1.5,
        task_timeout="5m",
        grace="3s",
        once=True,
        stream=True,
        no_hooks=True,
        from_branch="dev",
    )
    argv = inner_command(request, "host-inner", "host")
    assert argv[:11] == [
        "python3", "-m", "cub", "run", "--name", "host-inner", "--parent-run-id", "host",
        "--use-current-branch", "--main-ok", "--harness",
    ]  # fmt: skip
    joined = " ".join(argv)
    for expected in (
        "--harness-cmd python3 ./agent.py",
        "--task t1",
        "--budget 1.5",
        "--task-timeout 5m",
        "--grace 3s",
        "--once",
        "--stream",
        "--no-hooks",
    ):
        assert expected in joined  # fmt: skip
    for never in ("--sandbox", "--no-network", "--from-branch", "--worktree"):
        assert never not in argv


def test_only_allow_listed_variables_and_a_git_identity_reach_the_container() -> None:
    config = SandboxConfig(env=["ANTHROPIC_API_KEY", "UNSET_KEY"])
    host = {
        "ANTHROPIC_API_KEY": "key",
        "OPENAI_API_KEY": "not allowed",
        "PATH": "/host/bin",
        "HOME": "/root",
        "CUB_MODEL": "m1",
        "CUB_RUN_ID": "not a config variable",
    }
    identity = {"GIT_AUTHOR_NAME": "A", "GIT_COMMITTER_EMAIL": "a@x", "GIT_DIR": "/nope"}
    env = container_env(config, host, identity, Path("/ws/.git/cub-sandbox-config"))
    assert env == {
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "IS_SANDBOX": "1",
        "ANTHROPIC_API_KEY": "key",
        "CUB_MODEL": "m1",
        "GIT_AUTHOR_NAME": "A",
        "GIT_COMMITTER_EMAIL": "a@x",
        "XDG_CONFIG_HOME": "/ws/.git/cub-sandbox-config",
    }


def test_container_settings_are_hardened(tmp_path: Path) -> None:
    config = SandboxConfig(memory="1.5g", cpus=0.5, pids_limit=100, network=False)
    kwargs = run_kwargs(image="img", command=["true"], workspace=tmp_path, working_dir=tmp_path,
                        env={}, config=config, name="cub-x", labels={})  # fmt: skip
    assert kwargs["volumes"] == {str(tmp_path): {"bind": str(tmp_path), "mode": "rw"}}
    assert kwargs["user"] == f"{os.getuid()}:{os.getgid()}"
    assert kwargs["read_only"] is True and kwargs["tmpfs"] == {"/tmp": ""}
    assert kwargs["cap_drop"] == ["ALL"] and kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == int(1.5 * 1024**3)
    assert kwargs["nano_cpus"] == 500_000_000 and kwargs["pids_limit"] == 100
    assert kwargs["network_mode"] == "none" and kwargs["init"] is True
    assert "ulimits" not in kwargs
    online = run_kwargs(image="img", command=["true"], workspace=tmp_path, working_dir=tmp_path,
                        env={}, config=SandboxConfig(), name="cub-x", labels={})  # fmt: skip
    assert "network_mode" not in online


def test_memory_sizes() -> None:
    assert memory_bytes("32m") == 32 * 1024**2
    assert memory_bytes("2g") == 2 * 1024**3
    assert memory_bytes("512K") == 512 * 1024
    assert memory_bytes("1048576") == 1048576


def test_task_results_come_back_unless_the_host_changed_the_task(tmp_path: Path) -> None:
    host_dir, inner_dir = tmp_path / "host", tmp_path / "inner"
    tasks = [task("t1", custom="kept"), task("t2"), task("t3")]
    host_dir.mkdir()
    inner_dir.mkdir()
    host = JsonlBackend(write_tasks(host_dir, tasks), host_dir)
    inner = JsonlBackend(write_tasks(inner_dir, tasks), inner_dir)
    before = snapshot(host)
    # The inner run closes t1 and fails t2; meanwhile someone closes t2 on the host.
    for task_id in ("t1", "t2"):
        inner.claim_next("inner", epic=None, label=None, task_id=task_id)
    inner.close("t1", "inner", reason="done in the sandbox")
    inner.mark_failed("t2", "inner", reason="broken")
    host.close("t2", "someone", reason="done by hand")

    updated, conflicts = sync_tasks(host, inner, ["t1", "t2"], before)

    assert (updated, conflicts) == (["t1"], ["t2"])
    result = read_tasks(host_dir)
    assert result["t1"]["status"] == "closed" and result["t1"]["attempts"] == 1
    assert result["t1"]["close_reason"] == "done in the sandbox"
    assert result["t1"]["custom"] == "kept"  # keys cub does not know survive
    assert result["t2"]["close_reason"] == "done by hand"
    assert result["t3"] == {**task("t3")}


def _context(base: str | None, agent: str | None = None) -> dict[str, bytes]:
    import io
    import tarfile

    from cub.modes.sandbox.image import build_context

    with tarfile.open(fileobj=io.BytesIO(build_context(base, agent))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_the_user_image_installs_cub_from_its_source_with_pip() -> None:
    import tomllib

    files = _context(None, "@anthropic-ai/claude-code")
    dockerfile = files["Dockerfile"].decode()
    assert dockerfile.startswith("FROM python:3.12-slim\n")
    assert "pip install --no-cache-dir /opt/cub/src" in dockerfile
    assert "npm install -g @anthropic-ai/claude-code" in dockerfile
    assert "src/cub/__init__.py" in files and "src/cub/templates/runloop.md" in files
    assert not any("__pycache__" in name for name in files)
    project = tomllib.loads(files["src/pyproject.toml"].decode())["project"]
    assert {re.match(r"[\w.-]+", d)[0] for d in project["dependencies"]} == {
        "transitions", "click", "msgspec", "psutil", "google-re2", "hyperscan",
    }  # fmt: skip
    # A dependency for some platforms keeps its marker, quotes and all, in the TOML.
    (hyperscan,) = (d for d in project["dependencies"] if d.startswith("hyperscan"))
    assert hyperscan.split(";")[1].strip() == (
        'sys_platform == "linux" and platform_machine == "x86_64"'
    )


def test_the_offline_image_copies_cub_and_its_runtime_dependencies() -> None:
    files = _context("some-local-python:1")
    dockerfile = files["Dockerfile"].decode()
    assert dockerfile.startswith("FROM some-local-python:1\n")
    assert "ENV PYTHONPATH=/opt/cub/lib" in dockerfile and "pip" not in dockerfile
    tops = {name.split("/")[1] for name in files if name.startswith("lib/")}
    for wanted in ("cub", "transitions", "click", "msgspec", "psutil", "re2", "six.py"):
        assert wanted in tops, wanted
    assert "docker" not in tops and "pytest" not in tops  # only what cub needs at run time
    assert files["bin/cub"].startswith(b"#!/bin/sh")


def test_an_agent_that_is_not_an_npm_package_name_is_refused() -> None:
    import pytest

    from cub.modes.sandbox.image import ImageBuildError, check_agent_package

    check_agent_package("@openai/codex@0.1.2")
    with pytest.raises(ImageBuildError):
        check_agent_package("x; rm -rf /")
