"""cub's own CPU per `--parallel` child: tasks whose agent commits at once, so that what is
measured is cub (the parent, the helper that forks the children, the children, their git
processes), not the agent's.

    .venv/bin/python tools/bench/bench_child_cpu.py [--tasks 16] [--parallel 8] [--repeat 3]
                                                    [--breakdown] [--record]

CPU per child = (user + system CPU of `cub run --parallel` and every process under it, from
RUSAGE_CHILDREN around the run, minus the agents' own CPU) / tasks. The agents' CPU is measured
apart: the same agent run once per task in a scratch repository. CPU time is the figure: on a
busy machine the wall time says more about the neighbours than about cub.

--breakdown adds one instrumented run that says where the CPU goes: each Python process of cub
logs its own CPU at exit (a `sitecustomize` on PYTHONPATH; role by command line: parent, helper,
child), and every `git` goes through a PATH shim that notes who started it (cub's parent, a
child, or the agent) and its CPU from wait4, with what git itself starts (a merge's `stash
create`, `maintenance run --auto`). The shims cost CPU of their own, so the headline figure
comes from the plain runs.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import REPO, append_section, environment, machine_line, make_project

AGENT = """#!/bin/sh
echo done > "$CUB_TASK_ID.txt"
git add "$CUB_TASK_ID.txt"
git commit -q -m "$CUB_TASK_ID"
"""

# Each Python process of cub appends "py <pid> <role> <user s> <system s>" when it exits.
SITECUSTOMIZE = """
import atexit, os, resource, sys

def _log_cpu():
    argv = sys.argv
    if "--parallel" in argv:
        role = "parent"
    elif "--parent-run-id" in argv:
        role = "child"
    elif argv and argv[0].endswith("child_server.py"):
        role = "helper"
    else:
        role = "other"
    # Not os.times(): it counts in 10 ms ticks.
    used = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["BENCH_CPU_LOG"], "a") as log:
        log.write(f"py {os.getpid()} {role} {used.ru_utime} {used.ru_stime}\\n")

if os.environ.get("BENCH_CPU_LOG"):
    atexit.register(_log_cpu)
"""

# Each git through PATH appends "git <pid of who started it> <CPU s> <arguments>" (wait4's
# rusage: microseconds, where /usr/bin/time and the shell's `times` round to 10 ms).
GIT_SHIM = """#!{python} -I
import os, signal, sys
pid = os.posix_spawn({git!r}, ["git", *sys.argv[1:]], os.environ)
_, status, used = os.wait4(pid, 0)
with open(os.environ["BENCH_GIT_LOG"], "a") as log:
    args = " ".join(sys.argv[1:]).replace("\\n", " ")
    log.write(f"git {{os.getppid()}} {{used.ru_utime + used.ru_stime}} {{args}}\\n")
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def cpu_seconds(before: resource.struct_rusage, after: resource.struct_rusage) -> float:
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def agent_cpu(root: Path, agent: Path, tasks: int, env: dict[str, str]) -> float:
    """The agent's own CPU for ``tasks`` tasks, run directly in a scratch repository."""
    scratch = root / f"scratch-{time.monotonic_ns()}"
    make_project(scratch, [], env)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for i in range(tasks):
        subprocess.run([str(agent)], cwd=scratch, env={**env, "CUB_TASK_ID": f"t{i}"}, check=True)
    return cpu_seconds(before, resource.getrusage(resource.RUSAGE_CHILDREN))


def parallel_run(
    root: Path,
    agent: Path,
    args: argparse.Namespace,
    env: dict[str, str],
    setup_env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """(CPU, wall) of one `cub run --parallel` over a fresh project (made with ``setup_env``,
    default ``env``), in seconds."""
    project = root / f"p-{time.monotonic_ns()}"
    tasks = [{"id": f"t{i}", "title": f"task {i}"} for i in range(args.tasks)]
    make_project(project, tasks, setup_env or env)
    argv = [sys.executable, "-m", "cub", "run", "-H", "command", "--harness-cmd", str(agent)]
    argv += ["--parallel", str(args.parallel)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    cpu = cpu_seconds(before, resource.getrusage(resource.RUSAGE_CHILDREN))
    if done.returncode != 0:
        raise SystemExit(f"cub run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return cpu, wall


@dataclass
class Breakdown:
    python: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    git_cpu: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    git_calls: collections.Counter[str] = field(default_factory=collections.Counter)


def instrumented_run(
    root: Path, agent: Path, args: argparse.Namespace, env: dict[str, str]
) -> Breakdown:
    shims = root / "shims"
    shims.mkdir(exist_ok=True)
    (shims / "sitecustomize.py").write_text(SITECUSTOMIZE)
    git = shims / "git"
    real_git = shutil.which("git", path=env.get("PATH"))
    git.write_text(GIT_SHIM.format(python=sys.executable, git=real_git))
    git.chmod(0o755)
    cpu_log, git_log = root / "cpu.log", root / "git.log"
    plain, env = (
        env,
        {
            **env,
            "PATH": f"{shims}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{shims}",
            "BENCH_CPU_LOG": str(cpu_log),
            "BENCH_GIT_LOG": str(git_log),
        },
    )
    parallel_run(root, agent, args, env, setup_env=plain)
    return read_logs(cpu_log, git_log)


def read_logs(cpu_log: Path, git_log: Path) -> Breakdown:
    found = Breakdown()
    roles: dict[str, str] = {}
    for line in cpu_log.read_text().splitlines():
        _, pid, role, user, system = line.split()
        roles[pid] = role
        found.python[role].append(float(user) + float(system))
    for line in git_log.read_text().splitlines():
        _, ppid, cpu, *command = line.split()
        who = roles.get(ppid, "the agent (not cub's)")
        words = [w for w in command if not w.startswith("-")][:1]
        name = f"{who}: git {' '.join(words)}"
        found.git_cpu[name] += float(cpu)
        found.git_calls[name] += 1
    return found


def breakdown_lines(found: Breakdown, tasks: int) -> list[str]:
    lines = ["| where | processes | CPU per child |", "|---|---|---|"]
    for role in ("parent", "helper", "child"):
        times = found.python.get(role)
        if times:
            lines.append(f"| Python: {role} | {len(times)} | {sum(times) / tasks * 1000:.1f} ms |")
    for name, calls in sorted(found.git_calls.items(), key=lambda kv: -found.git_cpu[kv[0]]):
        cpu = found.git_cpu[name] / tasks * 1000
        lines.append(f"| {name} | {calls / tasks:.1f} per child | {cpu:.1f} ms |")
    cub_git = sum(v for k, v in found.git_cpu.items() if not k.startswith("the agent"))
    calls = sum(v for k, v in found.git_calls.items() if not k.startswith("the agent"))
    lines.append(
        f"| git, all of cub's | {calls / tasks:.1f} per child | {cub_git / tasks * 1000:.1f} ms |"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cub-bench-child-cpu-"))
    try:
        env = environment(root / "home")
        agent = root / "agent.sh"
        agent.write_text(AGENT)
        agent.chmod(0o755)
        runs = [parallel_run(root, agent, args, env) for _ in range(args.repeat)]
        agents = min(agent_cpu(root, agent, args.tasks, env) for _ in range(args.repeat))
        found = instrumented_run(root, agent, args, env) if args.breakdown else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_child = [(cpu - agents) / args.tasks * 1000 for cpu, _ in runs]
    line = (
        f"{args.tasks} tasks, --parallel {args.parallel}: cub's CPU per child "
        f"{min(per_child):.0f} ms best, {sorted(per_child)[len(per_child) // 2]:.0f} ms median "
        f"of {args.repeat} (walls {', '.join(f'{w:.2f}' for _, w in runs)} s; the agents' own "
        f"CPU, {agents * 1000:.0f} ms, subtracted)"
    )
    print(line)
    table = breakdown_lines(found, args.tasks) if found is not None else []
    print("\n".join(table))
    if args.record:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        append_section(
            REPO / "tools" / "bench" / "RESULTS.md",
            "cub's CPU per parallel child",
            [
                f"`tools/bench/bench_child_cpu.py` on {machine_line()}, load average {load}.",
                "",
                line,
                "",
                *table,
                "",
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
