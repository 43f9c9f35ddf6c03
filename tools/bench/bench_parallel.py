"""`--parallel` speed-up: eight tasks whose agent sleeps 1 s, run one at a time and four at a
time, each in a fresh project, best of N.

    .venv/bin/python tools/bench/bench_parallel.py [--tasks 8] [--parallel 4] [--repeat 3]
                                                   [--record]

Ideal: 8 s serial, 2 s with four at once; what is above that is cub's own cost (starting a
child `cub` per task, merging the branches). The test suite checks only the behaviour (children
overlap, never more than N at once: tests/modes/test_parallel.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import REPO, append_section, environment, machine_line, make_project

AGENT = """#!{python}
import os, subprocess, sys, time
sys.stdin.read()
time.sleep(1)
name = os.environ["CUB_TASK_ID"] + ".txt"
open(name, "w").write("done\\n")
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "-qm", name], check=True)
"""


def one_run(root: Path, tasks: int, parallel: int | None, env: dict[str, str]) -> float:
    import subprocess

    project = root / f"p-{time.monotonic_ns()}"
    make_project(project, [{"id": f"t{i}", "title": f"task {i}"} for i in range(tasks)], env)
    argv = [sys.executable, "-m", "cub", "run", "-H", "command", "--harness-cmd", str(root / "a")]
    if parallel is not None:
        argv += ["--parallel", str(parallel)]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"cub run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cub-bench-parallel-"))
    try:
        env = environment(root / "home")
        agent = root / "a"
        agent.write_text(AGENT.format(python=sys.executable))
        agent.chmod(0o755)
        serial = min(one_run(root, args.tasks, None, env) for _ in range(args.repeat))
        wide = min(one_run(root, args.tasks, args.parallel, env) for _ in range(args.repeat))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    line = (
        f"{args.tasks} tasks of 1 s: serial {serial:.2f} s, --parallel {args.parallel} "
        f"{wide:.2f} s, speed-up {serial / wide:.2f}x (ideal {args.parallel}x)"
    )
    print(line)
    if args.record:
        append_section(
            REPO / "tools" / "bench" / "RESULTS.md",
            "--parallel speed-up",
            [
                f"`tools/bench/bench_parallel.py` on {machine_line()}, best of {args.repeat}.",
                "",
                line,
                "",
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
