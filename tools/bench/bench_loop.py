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

``--backlog N [N ...]`` measures how the cost of a task depends on the size of the backlog it
is drawn from: for each N, a backlog of N tasks shaped like bench_selection.py's (dependency
chains of 10, epics of 500, a fifth closed) and two runs on fresh copies of the project, one
that takes 1 task and one that takes 1 + T (``--budget-tasks``; T is ``--tasks``, 100 by
default here). The figures are the CPU time of the whole `cub` process, its agents and git
included (stable on a loaded machine), and the wall time beside it:

    per task = (run of 1 + T tasks - run of 1 task) / T

which leaves out what a run pays once (start-up, reading the backlog, the first task);
``whole run / task`` is the longer run's figure divided by its 1 + T tasks, start-up included.
The ratios are against the first N given (targets: 10x the tasks <= 1.2x, 100x <= 1.5x).
With ``--profile FILE`` a run of T tasks on the largest backlog is profiled. With
``--history``, the fifth of each backlog that is closed was closed by earlier runs: the closes
are in the backlog's ledger (as runs record them), not in the task file.
"""

from __future__ import annotations

import argparse
import json
import pstats
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "bench"))

from bench_selection import backlog as shaped_backlog  # noqa: E402
from benchkit import environment, make_project  # noqa: E402

CPU_TARGET_MS = 8.0
# (backlog size as a multiple of the first one, the most its per-task CPU may be of the first's)
RATIO_TARGETS = {10: 1.2, 100: 1.5}
BUDGET_EXHAUSTED = 3  # the exit code of a run that stopped at --budget-tasks


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


def timed_run(project: Path, env: dict[str, str], agent: str, tasks: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one `cub run` that takes ``tasks`` tasks; CPU is the process's
    and its children's (agents, git), user + system."""
    argv = [sys.executable, "-m", "cub", "run", "--harness", "command", "--harness-cmd", agent]
    argv += ["--quiet", "--budget-tasks", str(tasks)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in (0, BUDGET_EXHAUSTED):
        raise SystemExit(f"cub run failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def best_timed_run(
    template: Path, work: Path, env: dict[str, str], agent: str, tasks: int, repeat: int
) -> tuple[float, float]:
    """Best wall and best CPU of ``repeat`` runs, each on a fresh copy of ``template`` (no
    ledger, no earlier runs)."""
    best_wall = best_cpu = float("inf")
    for i in range(repeat):
        project = work / f"{template.name}-{tasks}-{i}"
        shutil.copytree(template, project, symlinks=True)
        wall, cpu = timed_run(project, env, agent, tasks)
        shutil.rmtree(project)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return best_wall, best_cpu


def closed_by_runs(project: Path, tasks: list[dict[str, object]]) -> list[dict[str, object]]:
    """``tasks`` with the closed ones open in the file, and the ledger that earlier runs would
    have left for them written into the project's state directory."""
    from cub.tasks.ledger import KeyChange, LedgerFile, ledger_path, write_ledger

    ledger = LedgerFile(task_file=".cub/tasks.jsonl")
    stamp = "2025-01-02T00:00:00+00:00"
    for task in tasks:
        if task["status"] == "closed":
            task["status"] = "open"
            ledger.tasks[str(task["id"])] = {
                "status": KeyChange(base="open", value="closed"),
                "attempts": KeyChange(value=1),
                "closed_at": KeyChange(value=stamp),
                "close_reason": KeyChange(value="done in cub run run-20250102-000000-0000"),
                "updated_at": KeyChange(value=stamp),
            }
    write_ledger(ledger_path(project / ".cub" / "tasks.jsonl", project), ledger)
    return tasks


def measure_backlogs(
    sizes: list[int],
    tasks: int,
    repeat: int,
    work: Path,
    env: dict[str, str],
    agent: str,
    history: bool = False,
) -> list[dict[str, float]]:
    rows = []
    for size in sizes:
        template = work / f"backlog-{size}"
        make_project(template, shaped_backlog(size), env)
        if history:
            # The file rewritten with those tasks open: what the ledger is laid over.
            lines = closed_by_runs(template, shaped_backlog(size))
            tasks_file = template / ".cub" / "tasks.jsonl"
            tasks_file.write_text("".join(json.dumps(task) + "\n" for task in lines))
        wall_1, cpu_1 = best_timed_run(template, work, env, agent, 1, repeat)
        wall_n, cpu_n = best_timed_run(template, work, env, agent, 1 + tasks, repeat)
        rows.append(
            {
                "backlog": size,
                "start_cpu_ms": cpu_1 * 1000,
                "cpu_ms": (cpu_n - cpu_1) / tasks * 1000,
                "wall_ms": (wall_n - wall_1) / tasks * 1000,
                "whole_cpu_ms": cpu_n / (1 + tasks) * 1000,
            }
        )
        shutil.rmtree(template)
    return rows


def report_backlogs(rows: list[dict[str, float]], tasks: int, repeat: int) -> bool:
    """Print the table; whether every target was met."""
    print(f"{tasks} tasks from each backlog, best of {repeat}; CPU = cub and its children")
    print(
        f"{'backlog':>8} {'1-task run CPU':>15} {'CPU/task':>9} {'wall/task':>10} "
        f"{'ratio':>6} {'whole run CPU/task':>19} {'ratio':>6}"
    )
    base, ok = rows[0], True
    for row in rows:
        ratio = row["cpu_ms"] / base["cpu_ms"]
        whole_ratio = row["whole_cpu_ms"] / base["whole_cpu_ms"]
        limit = RATIO_TARGETS.get(round(row["backlog"] / base["backlog"]))
        verdict = "" if limit is None else f"  (target <= {limit}x)"
        ok = ok and row["cpu_ms"] <= CPU_TARGET_MS and (limit is None or ratio <= limit)
        print(
            f"{row['backlog']:>8} {row['start_cpu_ms']:>12.0f} ms {row['cpu_ms']:>6.2f} ms "
            f"{row['wall_ms']:>7.2f} ms {ratio:>5.2f}x {row['whole_cpu_ms']:>16.2f} ms "
            f"{whole_ratio:>5.2f}x{verdict}"
        )
    print(f"target: CPU/task <= {CPU_TARGET_MS:.0f} ms")
    return ok


def profile_backlog(
    size: int, tasks: int, work: Path, env: dict[str, str], agent: str, out: Path
) -> None:
    project = work / "profiled"
    make_project(project, shaped_backlog(size), env)
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "cub", "run", "--quiet"]
    argv += ["--harness", "command", "--harness-cmd", agent, "--budget-tasks", str(tasks)]
    subprocess.run(argv, cwd=project, env=env, capture_output=True, check=False)
    stats = pstats.Stats(str(out))
    print(f"\nprofile of {tasks} tasks from {size} ({out}): top 25 by cumulative time")
    stats.sort_stats("cumulative").print_stats(25)
    print("top 25 by own time")
    stats.sort_stats("tottime").print_stats(25)


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
    parser.add_argument("--tasks", type=int, help="tasks per run (default 200; 100 with --backlog)")
    parser.add_argument("--repeat", type=int, default=3, help="best of R runs (default 3)")
    parser.add_argument("--profile", type=Path, help="also profile one run into this file")
    parser.add_argument("--agent", default="true", help="the agent command (default: true)")
    parser.add_argument(
        "--backlog", type=int, nargs="+", metavar="N", help="CPU per task by backlog size"
    )
    parser.add_argument(
        "--history", action="store_true", help="with --backlog: the closed tasks in the ledger"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cub-bench-loop-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        env = environment(work / "home")
        if args.backlog:
            return backlog_main(args, work, env)
        args.tasks = args.tasks or 200
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


def backlog_main(args: argparse.Namespace, work: Path, env: dict[str, str]) -> int:
    tasks = args.tasks or 100
    ok = report_backlogs(
        measure_backlogs(args.backlog, tasks, args.repeat, work, env, args.agent, args.history),
        tasks,
        args.repeat,
    )
    if args.profile:
        profile_backlog(max(args.backlog), tasks, work, env, args.agent, args.profile)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
