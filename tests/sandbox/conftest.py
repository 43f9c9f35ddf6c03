"""A real Docker engine for the sandbox tests, started once per session.

No registry is reachable on these machines, so everything is local: Debian's docker.io (installed
with apt-get when dockerd is missing), a private dockerd whose data, exec root, socket and pid file
all live under one short temporary directory (it never touches the host's network: no iptables,
no bridge), a Python base image made from Debian packages (tools/docker/make-base-image.sh), and
the sandbox image built from it by `cub sandbox build --base`. The daemon is stopped and its
directory removed when the session ends. Only an engine that truly cannot start (no apt-get, not
root) makes these tests skip, with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.debian import install_debian_package
from tests.helpers.swarm import Swarm

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "cub-test-base:latest"
SANDBOX_IMAGE = "cub-sandbox:latest"
BASE_IMAGE_CACHE = Path(tempfile.gettempdir()) / "cub-base-image"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _install_docker() -> str | None:
    """Install Debian's docker.io when dockerd is missing; returns why it cannot be, or None."""
    return install_debian_package("dockerd", "docker.io")


def _mounts_under(root: Path) -> list[str]:
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1].replace("\\040", " ")
            if point == str(root) or point.startswith(f"{root}/"):
                found.append(point)
    return found


def _unmount_all(root: Path) -> None:
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class Engine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "dockerd.log"

    def start(self, driver: str) -> bool:
        root = self.root
        (root / "daemon.json").write_text(f'{{"deprecated-key-path": "{root}/key.json"}}')
        argv = [
            "dockerd",
            "--config-file", f"{root}/daemon.json",
            "--data-root", f"{root}/data",
            "--exec-root", f"{root}/exec",
            "--pidfile", f"{root}/dockerd.pid",
            "-H", self.url,
            "--storage-driver", driver,
            "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        return self._wait_ping(timeout=30)

    def _wait_ping(self, timeout: float) -> bool:
        import docker

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            if self.socket.exists():
                try:
                    if docker.DockerClient(base_url=self.url, timeout=2).ping():
                        return True
                except Exception:
                    pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None
        _unmount_all(self.root)

    def log_tail(self) -> str:
        try:
            return _last_line(self.log.read_text(errors="replace"))
        except OSError:
            return "no log"


def _remove_containers(url: str) -> None:
    import docker

    try:
        client = docker.DockerClient(base_url=url, timeout=10)
        for container in client.containers.list(all=True):
            container.remove(force=True)
    except Exception:
        pass


def _build_images(engine: Engine) -> None:
    env = {**os.environ, "DOCKER_HOST": engine.url}
    script = REPO / "tools" / "docker" / "make-base-image.sh"
    done = subprocess.run(
        [str(script), BASE_IMAGE, str(BASE_IMAGE_CACHE)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed: {_last_line(done.stderr or done.stdout)}")
    env = {k: v for k, v in env.items() if not k.startswith("CUB_")}
    done = subprocess.run(
        [sys.executable, "-m", "cub", "sandbox", "build", "--base", BASE_IMAGE,
         "--tag", SANDBOX_IMAGE],
        env=env, cwd=engine.root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"cub sandbox build failed: {_last_line(done.stderr or done.stdout)}")


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """DOCKER_HOST of a private engine that has the sandbox image (`cub-sandbox:latest`)."""
    started = time.monotonic()
    why = _install_docker()
    if why is not None:
        pytest.skip(f"no Docker engine for the sandbox tests: {why}")
    # Short: a unix socket path must stay under ~107 characters.
    root = Path(tempfile.mkdtemp(prefix="cubd-", dir="/tmp"))
    engine = Engine(root)
    try:
        if not engine.start("overlay2"):
            engine.stop()  # and unmount what the failed start left behind
            shutil.rmtree(root / "data", ignore_errors=True)
            if not engine.start("vfs"):
                pytest.skip(f"dockerd did not start: {engine.log_tail()}")
        _build_images(engine)
        print(f"\nsandbox tests: engine and images ready in {time.monotonic() - started:.1f}s")
        yield engine.url
    finally:
        _remove_containers(engine.url)
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def docker_client(docker_host: str):  # type: ignore[no-untyped-def]
    import docker

    return docker.DockerClient(base_url=docker_host, timeout=30)


@pytest.fixture(scope="session")
def swarm(docker_host: str) -> Iterator[Swarm]:
    """A two-node swarm: the sandbox tests' engine as its manager, a second engine in a network
    namespace of its own as its worker, and a git daemon both reach (tests/helpers/swarm.py)."""
    started = time.monotonic()
    built = Swarm.build(docker_host, SANDBOX_IMAGE)
    print(f"\nswarm tests: two-node swarm ready in {time.monotonic() - started:.1f}s")
    try:
        yield built
    finally:
        built.close()
