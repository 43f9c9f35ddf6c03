"""Loop overhead per task: what `cub run` costs on top of the agents it runs (target < 10 ms).

    python tools/bench/bench_loop.py [--tasks N] [--repeat R] [--profile FILE]

Builds a git project with N open tasks (default 200) in a temporary directory and runs the real
`cub run --harness command --harness-cmd true` on it: every agent is `true`, which exits at once.
The agents' own time is measured apart, as N direct `subprocess.run(["true"])` calls, and
subtracted:

    overhead/task = (wall time of `cub run` - agents' time) / N

That figure includes cub's start-up, paid once per run; the marginal figure also subtracts the
wall time of a run on an empty backlog, leaving what each extra task costs. With ``--profile``
the run is repeated under cProfile and the top costs are printed.

``--agent CMD`` runs another agent command instead of ``true``; its own time is then measured
as N runs of CMD in a copy of the project. ``--agent "git commit -q --allow-empty -m work"``
shows what a task costs when the agent commits (cub then asks git for the commit range).
"""

from __future__ import annotations

import argparse
import pstats
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "bench"))

from benchkit import environment, make_project  # noqa: E402


def backlog(count: int) -> list[dict[str, object]]:
    return [
        {"id": f"t-{i}", "title": f"Task {i}", "status": "open", "priority": 2}
        for i in range(count)
    ]


def cub_run(
    project: Path, env: dict[str, str], agent: str, prefix: list[str] | None = None
) -> float:
    argv = [
        *(prefix or [sys.executable]),
        "-m",
        "cub",
        "run",
        "--harness",
        "command",
        "--harness-cmd",
        agent,
        "--quiet",
    ]
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"cub run failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return elapsed


def agents_time(count: int, agent: str, project: Path, env: dict[str, str]) -> float:
    argv = shlex.split(agent)
    argv[0] = shutil.which(argv[0]) or argv[0]
    start = time.perf_counter()
    for _ in range(count):
        subprocess.run(argv, cwd=project, env=env, stdin=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def measure(
    tasks: int, repeat: int, work: Path, env: dict[str, str], agent: str
) -> dict[str, float]:
    walls, empties, agents_runs = [], [], []
    for i in range(repeat):
        project = work / f"proj-{i}"
        make_project(project, backlog(tasks), env)
        walls.append(cub_run(project, env, agent))
        empty = work / f"empty-{i}"
        make_project(empty, [], env)
        empties.append(cub_run(empty, env, agent))
        agents_runs.append(agents_time(tasks, agent, empty, env))
    wall, empty, agents = min(walls), min(empties), min(agents_runs)
    return {
        "wall_s": wall,
        "empty_run_s": empty,
        "agents_s": agents,
        "overhead_ms_per_task": (wall - agents) / tasks * 1000,
        "marginal_ms_per_task": (wall - empty - agents) / tasks * 1000,
    }


def profile(tasks: int, work: Path, env: dict[str, str], agent: str, out: Path) -> None:
    project = work / "profiled"
    make_project(project, backlog(tasks), env)
    cub_run(project, env, agent, prefix=[sys.executable, "-m", "cProfile", "-o", str(out)])
    stats = pstats.Stats(str(out))
    print(f"\nprofile of one run ({out}): top 25 by own time")
    stats.sort_stats("tottime").print_stats(25)
    print("top 25 by cumulative time")
    stats.sort_stats("cumulative").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs (default 3)")
    parser.add_argument("--profile", type=Path, help="also profile one run into this file")
    parser.add_argument("--agent", default="true", help="the agent command (default: true)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cub-bench-loop-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        env = environment(work / "home")
        result = measure(args.tasks, args.repeat, work, env, args.agent)
        print(f"agent:                 {args.agent}")
        print(f"tasks:                 {args.tasks}")
        print(f"cub run wall time:     {result['wall_s'] * 1000:.0f} ms (best of {args.repeat})")
        print(f"empty-backlog run:     {result['empty_run_s'] * 1000:.0f} ms")
        print(f"agents' own time:      {result['agents_s'] * 1000:.0f} ms")
        print(f"overhead per task:     {result['overhead_ms_per_task']:.2f} ms  (target < 10 ms)")
        print(
            f"marginal per task:     {result['marginal_ms_per_task']:.2f} ms  (start-up excluded)"
        )
        if args.profile:
            profile(args.tasks, work, env, args.agent, args.profile)
    return 0 if result["overhead_ms_per_task"] < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
