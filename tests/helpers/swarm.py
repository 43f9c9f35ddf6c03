"""A real two-node Docker Swarm on one machine, for the tests of `--engine swarm`.

The manager is the private engine the sandbox tests start (tests/sandbox/conftest.py). The
worker is a second private `dockerd` inside a network namespace made here, joined to the
manager's swarm over a veth pair whose /30 belongs to this swarm alone (no forwarding, no NAT:
the namespace reaches the host's end of the pair and nothing else). A bare repository served by
`git daemon` on the host's end is the remote both nodes clone from and push to.

Everything is torn down in `close()`: the services, the swarm on both nodes, the worker's
engine and whatever it left running, the git daemon, the pair and the namespace. Names and the
subnet are unique per instance, as the namespace, the veth names and the subnet are
machine-wide. (`../shared/notes/docker-swarm.md` has the measurements behind each step.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIT_PORT = 9418


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def _free_subnet() -> tuple[str, str]:
    """Two addresses of a /30 in 10.213.0.0/16 that no interface of this machine uses."""
    used = _run("ip", "-o", "-4", "addr", "show").stdout
    for _ in range(200):
        base = secrets.randbelow(16384) * 4
        host = f"10.213.{base // 256}.{base % 256 + 1}"
        peer = f"10.213.{base // 256}.{base % 256 + 2}"
        if f" {host}/" not in used and f" {peer}/" not in used:
            return host, peer
    raise RuntimeError("no free /30 in 10.213.0.0/16")


def _cgroup_mounts() -> list[tuple[str, str, str]]:
    """(type, mount point, options) of the host's cgroup mounts, as a fresh /sys lacks them."""
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _, point, kind, options, *_ = line.split()
            if kind in ("cgroup", "cgroup2"):
                found.append((kind, point, options))
    return found


def _worker_start_script(root: Path, hostname: str, socket: Path, cgroup_parent: str) -> str:
    """What runs inside the namespace: `ip netns exec` remounted /sys without the cgroup
    hierarchies dockerd needs, so they are mounted again; then a hostname of the node's own
    (otherwise both nodes are named alike) and the engine."""
    lines = ["set -e", "mount -t tmpfs cgroup_root /sys/fs/cgroup || true"]
    for kind, point, options in _cgroup_mounts():
        lines.append(f"mkdir -p {point}")
        opts = ",".join(o for o in options.split(",") if o not in ("rw", "ro"))
        lines.append(f"mount -t {kind} -o {opts} {kind} {point} || true")
    lines.append(f"hostname {hostname}")
    lines.append(
        " ".join(
            [
                "exec dockerd",
                f"--config-file {root}/daemon.json",
                f"--data-root {root}/data",
                f"--exec-root {root}/exec",
                f"--pidfile {root}/dockerd.pid",
                f"-H unix://{socket}",
                "--storage-driver overlay2",
                f"--cgroup-parent {cgroup_parent}",
                "--iptables=false --ip-forward=false --ip-masq=false --bridge=none",
            ]
        )
    )
    return "\n".join(lines) + "\n"


@dataclass
class Swarm:
    """A two-node swarm: ``manager_url`` is its DOCKER_HOST, ``remote`` the git remote."""

    manager_url: str
    image: str  # the sandbox image's id on both nodes (a tag would make the worker pull)
    host_addr: str
    worker_addr: str
    remote_dir: Path  # the bare repositories `git daemon` serves
    namespace: str
    root: Path
    worker_url: str = ""
    worker_node_id: str = ""
    manager_node_id: str = ""
    _worker: subprocess.Popen[bytes] | None = None
    _git_daemon: subprocess.Popen[bytes] | None = None
    _veth: str = ""
    _cleanups: list[Any] = field(default_factory=list)

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.namespace}"

    def remote_url(self, name: str) -> str:
        return f"git://{self.host_addr}:{GIT_PORT}/{name}"

    def bare_repository(self, name: str, source: Path) -> str:
        """A bare clone of ``source`` served as ``name``; returns its URL."""
        target = self.remote_dir / name
        _run("git", "clone", "-q", "--bare", str(source), str(target))
        return self.remote_url(name)

    def manager_client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.manager_url, timeout=30)

    def worker_client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.worker_url, timeout=30)

    def stop_worker_engine(self) -> None:
        """The worker machine is lost: its engine and every container on it die at once."""
        proc = self._worker
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in _run("ip", "netns", "pids", self.namespace, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    # ------------------------------------------------------------------------ building it

    @classmethod
    def build(cls, manager_url: str, image_tag: str) -> Swarm:
        import docker

        suffix = secrets.token_hex(3)
        host_addr, worker_addr = _free_subnet()
        root = Path(tempfile.mkdtemp(prefix="cubsw-", dir="/tmp"))
        manager = docker.DockerClient(base_url=manager_url, timeout=60)
        image = manager.images.get(image_tag)
        swarm = cls(
            manager_url=manager_url,
            image=image.id,
            host_addr=host_addr,
            worker_addr=worker_addr,
            remote_dir=root / "git",
            namespace=f"cubsw{suffix}",
            root=root,
        )
        try:
            swarm._network(suffix)
            swarm._start_worker()
            swarm._form_swarm(manager)
            swarm._copy_image(manager, image)
            swarm._serve_git()
        except BaseException:
            swarm.close()
            raise
        return swarm

    def _network(self, suffix: str) -> None:
        ns, host_end, ns_end = self.namespace, f"vh{suffix}", f"vn{suffix}"
        _run("ip", "netns", "add", ns)
        self._cleanups.append(lambda: _run("ip", "netns", "delete", ns, check=False))
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        self._veth = host_end
        self._cleanups.append(lambda: _run("ip", "link", "delete", host_end, check=False))
        _run("ip", "link", "set", ns_end, "netns", ns)
        _run("ip", "addr", "add", f"{self.host_addr}/30", "dev", host_end)
        _run("ip", "link", "set", host_end, "up")
        inside = ("ip", "netns", "exec", ns)
        _run(*inside, "ip", "addr", "add", f"{self.worker_addr}/30", "dev", ns_end)
        _run(*inside, "ip", "link", "set", ns_end, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")

    def _start_worker(self) -> None:
        root = self.root / "worker"
        root.mkdir()
        (root / "daemon.json").write_text(f'{{"deprecated-key-path": "{root}/key.json"}}')
        socket = root / "docker.sock"
        script = root / "start.sh"
        script.write_text(
            _worker_start_script(root, f"{self.namespace}-worker", socket, self.cgroup_parent)
        )
        with open(root / "dockerd.log", "ab") as log:
            self._worker = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", str(script)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.worker_url = f"unix://{socket}"
        self._wait_for_engine(self.worker_url, root / "dockerd.log")

    def _wait_for_engine(self, url: str, log: Path) -> None:
        import docker

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self._worker is not None
            if self._worker.poll() is not None:
                break
            with contextlib.suppress(Exception):
                if docker.DockerClient(base_url=url, timeout=2).ping():
                    return
            time.sleep(0.1)
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the worker's dockerd did not start: {' | '.join(tail)}")

    def _form_swarm(self, manager: Any) -> None:
        manager.swarm.init(advertise_addr=self.host_addr, listen_addr=f"{self.host_addr}:2377")
        self._cleanups.append(lambda: _leave(self.manager_url))
        manager.swarm.reload()
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        worker = self.worker_client()
        worker.swarm.join(
            remote_addrs=[f"{self.host_addr}:2377"],
            join_token=token,
            advertise_addr=self.worker_addr,
            listen_addr=f"{self.worker_addr}:2377",
        )
        self._cleanups.append(lambda: _leave(self.worker_url))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nodes = manager.nodes.list()
            ready = [n for n in nodes if n.attrs["Status"]["State"] == "ready"]
            if len(ready) == 2:
                for node in nodes:
                    if node.attrs["Spec"].get("Role") == "manager":
                        self.manager_node_id = node.id
                    else:
                        self.worker_node_id = node.id
                return
            time.sleep(0.2)
        raise RuntimeError("the worker did not become a ready node of the swarm")

    def _copy_image(self, manager: Any, image: Any) -> None:
        """No registry: the image goes to the worker as a tarball."""
        tarball = self.root / "image.tar"
        with open(tarball, "wb") as out:
            for chunk in image.save(named=True):
                out.write(chunk)
        with open(tarball, "rb") as data:
            self.worker_client().images.load(data.read())
        tarball.unlink()

    def _serve_git(self) -> None:
        self.remote_dir.mkdir()
        self._git_daemon = subprocess.Popen(
            [
                "git",
                "daemon",
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
                f"--base-path={self.remote_dir}",
                f"--listen={self.host_addr}",
                f"--port={GIT_PORT}",
                str(self.remote_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    # ------------------------------------------------------------------------ tearing down

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for service in self.manager_client().services.list():
                service.remove()
        if self._git_daemon is not None and self._git_daemon.poll() is None:
            self._git_daemon.kill()
            self._git_daemon.wait(timeout=10)
        for cleanup in reversed(self._cleanups[2:]):  # the swarm: worker first, then manager
            with contextlib.suppress(Exception):
                cleanup()
        self._stop_worker()
        for cleanup in reversed(self._cleanups[:2]):  # the veth pair, then the namespace
            with contextlib.suppress(Exception):
                cleanup()
        _unmount_all(self.root)
        for _, point, _ in _cgroup_mounts():
            _remove_cgroup(Path(f"{point}{self.cgroup_parent}"))
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_worker(self) -> None:
        proc = self._worker
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # A dockerd that died leaves its containers' shims behind in the namespace.
        for pid in _run("ip", "netns", "pids", self.namespace, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


def _remove_cgroup(directory: Path) -> None:
    """A cgroup directory and those the worker's containers made in it, deepest first (a
    cgroup holds no files that rmdir minds, only directories)."""
    if not directory.is_dir():
        return
    for below in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            below.rmdir()
    with contextlib.suppress(OSError):
        directory.rmdir()


def _leave(url: str) -> None:
    import docker

    docker.DockerClient(base_url=url, timeout=30).swarm.leave(force=True)


def _unmount_all(root: Path) -> None:
    points = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1]
            if point == str(root) or point.startswith(f"{root}/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        _run("umount", "-l", point, check=False)
