"""Parallel efficiency, children on this machine against children as Docker Swarm services:
16 tasks whose agent sleeps 2 s and commits, at N = 2, 4 and 8.

    .venv/bin/python tools/bench/bench_scale.py [--tasks 16] [--sleep 2] [--widths 2 4 8]
                                                [--engines local swarm] [--record]

Efficiency = ideal / measured, where ideal = tasks × sleep / N (no cost at all for starting,
merging or collecting a child). The swarm is the tests' two-node swarm on this one machine
(a private engine as manager, a second in a network namespace as worker:
tests/helpers/swarm.py); it needs root and Debian's docker.io, and builds the sandbox image
first. On one machine the swarm adds its own cost (a container per child, git over the veth)
and no capacity: its figure is what the contract costs, not what more machines would give.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import REPO, append_section, environment, machine_line, make_project

sys.path.insert(0, str(REPO))

AGENT = """import os, subprocess, sys, time
time.sleep({sleep})
name = os.environ["CUB_TASK_ID"] + ".txt"
open(name, "w").write("done\\n")
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "-qm", name], check=True)
"""


def project_with_agent(root: Path, tasks: int, sleep: float, env: dict[str, str]) -> Path:
    project = root / f"p-{time.monotonic_ns()}"
    make_project(project, [{"id": f"t{i}", "title": f"task {i}"} for i in range(tasks)], env)
    (project / "agent.py").write_text(AGENT.format(sleep=sleep))

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=project, env=env, check=True, capture_output=True)

    git("add", "-A")
    git("commit", "-q", "-m", "the backlog and the agent")
    return project


def timed(argv: list[str], project: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"cub run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def local_run(root: Path, args: argparse.Namespace, width: int, env: dict[str, str]) -> float:
    project = project_with_agent(root, args.tasks, args.sleep, env)
    argv = [sys.executable, "-m", "cub", "run", "-H", "command", "--harness-cmd"]
    argv += [f"{sys.executable} {project}/agent.py", "--parallel", str(width)]
    return timed(argv, project, env)


class SwarmRig:
    """The tests' two-node swarm, built once for every swarm measurement."""

    def __init__(self, root: Path) -> None:
        from tests.helpers.swarm import Swarm
        from tests.sandbox.conftest import SANDBOX_IMAGE, Engine, _build_images

        self.engine = Engine(Path(tempfile.mkdtemp(prefix="cubd-", dir="/tmp")))
        if not self.engine.start("overlay2"):
            raise SystemExit(f"dockerd did not start: {self.engine.log_tail()}")
        try:
            _build_images(self.engine)
            self.swarm = Swarm.build(self.engine.url, SANDBOX_IMAGE)
        except BaseException:
            self.engine.stop()
            raise
        self.root = root

    def run(self, args: argparse.Namespace, width: int, env: dict[str, str]) -> float:
        project = project_with_agent(self.root, args.tasks, args.sleep, env)
        url = self.swarm.bare_repository(f"{project.name}.git", project)
        subprocess.run(["git", "remote", "add", "origin", url], cwd=project, check=True)
        argv = [sys.executable, "-m", "cub", "run", "-H", "command", "--harness-cmd"]
        argv += ["python3 ./agent.py", "--parallel", str(width), "--sandbox", "--engine", "swarm"]
        return timed(argv, project, {**env, "DOCKER_HOST": self.swarm.manager_url})

    def close(self) -> None:
        self.swarm.close()
        self.engine.stop()
        shutil.rmtree(self.engine.root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--engines", nargs="+", default=["local", "swarm"])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cub-bench-scale-"))
    env = environment(root / "home")
    lines = []
    rig = None
    try:
        for engine in args.engines:
            if engine == "swarm":
                rig = SwarmRig(root)
            for width in args.widths:
                if engine == "swarm":
                    assert rig is not None
                    elapsed = rig.run(args, width, env)
                else:
                    elapsed = local_run(root, args, width, env)
                ideal = args.tasks * args.sleep / width
                line = (
                    f"| {engine} | {width} | {elapsed:.1f} s | {ideal:.1f} s | "
                    f"{ideal / elapsed:.2f} |"
                )
                print(line, flush=True)
                lines.append(line)
    finally:
        if rig is not None:
            rig.close()
        shutil.rmtree(root, ignore_errors=True)
    if args.record:
        append_section(
            REPO / "tools" / "bench" / "RESULTS.md",
            "parallel efficiency: local children and swarm services",
            [
                f"`tools/bench/bench_scale.py` on {machine_line()}: {args.tasks} tasks of an "
                f"agent that sleeps {args.sleep:g} s and commits.",
                "",
                "| engine | N | wall | ideal | efficiency |",
                "|---|---|---|---|---|",
                *lines,
                "",
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
