"""Wall time of the real `cub` process: `cub run --ready` on a 10,000-task backlog (target
< 300 ms), and start-up: `cub --version` and `cub run --help` (target < 150 ms).

    python tools/bench/bench_ready.py [--tasks N] [--repeat R] [--startup-repeat S]

The backlog is the one bench_selection.py generates: dependency chains of 10, labels, epics,
mixed priorities and statuses, unknown keys. Each figure is the best of R (or S) runs of a new
process, timed from the outside; the best CPU time (user + system) is printed beside it, as it
says what the wall time would be on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_selection import generate  # noqa: E402
from benchkit import best_of_runs, environment  # noqa: E402

READY_TARGET_MS = 300
STARTUP_TARGET_MS = 150


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--startup-repeat", type=int, default=10)
    args = parser.parse_args()
    cub = [sys.executable, "-m", "cub"]
    with tempfile.TemporaryDirectory(prefix="cub-bench-ready-") as tmp:
        work = Path(tmp)
        env = environment(work)
        project = work / "proj"
        (project / ".cub").mkdir(parents=True)
        generate(project / ".cub" / "tasks.jsonl", args.tasks)

        ready = [*cub, "run", "--ready"]
        rows = [
            (f"cub run --ready ({args.tasks} tasks)", READY_TARGET_MS, ready, project, args.repeat),
            (
                f"cub run --ready --json ({args.tasks} tasks)",
                READY_TARGET_MS,
                [*ready, "--json"],
                project,
                args.repeat,
            ),
            ("cub --version", STARTUP_TARGET_MS, [*cub, "--version"], work, args.startup_repeat),
            (
                "cub run --help",
                STARTUP_TARGET_MS,
                [*cub, "run", "--help"],
                work,
                args.startup_repeat,
            ),
        ]
        results = [
            (name, target, best_of_runs(argv, cwd, env, repeat), repeat)
            for name, target, argv, cwd, repeat in rows
        ]
    ok = True
    print(f"{'benchmark':<42} {'target':>9} {'wall':>10} {'CPU':>10}")
    for name, target, (wall, cpu), repeat in results:
        met = wall < target
        ok = ok and met
        verdict = "ok" if met else "MISSED"
        limit = f"<{target} ms"
        print(f"{name:<42} {limit:>9} {wall:>7.0f} ms {cpu:>7.0f} ms  best of {repeat}, {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
