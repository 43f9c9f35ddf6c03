"""Wall time of the real `cub` process listing 10,000 recorded runs: `cub runs list` and
`cub runs list --json` (target < 1 s each).

    python tools/bench/bench_runs_list.py [--runs N] [--repeat R] [--profile FILE]

The records are real ones: one `cub run` of two tasks with a scripted agent is recorded in a
temporary git repository, and its run.json, status.json, events.jsonl and runner.lock are
copied into N run directories with new ids, start times a minute apart, and a mix of endings
(completed, failed, interrupted, budget_exhausted). Each figure is the best of R runs of a new
process, timed from the outside, output captured. With --profile, one more `cub runs list` is
run under cProfile and its profile saved to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "bench"))

from benchkit import best_of_runs, environment  # noqa: E402

from cub.records.location import runs_dir  # noqa: E402

TARGET_MS = 1000

AGENT = """#!{python}
import sys

sys.stdin.read()
print('{{"cub_usage": {{"input_tokens": 1200, "output_tokens": 340, "cost_usd": 0.0123}}}}')
print("did the work")
"""

TASKS = [
    {"id": f"bench-{n}", "title": f"task {n}", "status": "open", "priority": n} for n in (1, 2)
]

ENDINGS = [
    ("completed", 0, "all_tasks_done", "all 2 tasks are done"),
    ("completed", 0, "all_tasks_done", "all 2 tasks are done"),
    ("failed", 1, "task_failed", "task bench-2 failed: the agent exited with code 1"),
    ("interrupted", 130, "sigint", "interrupted by SIGINT while bench-2 was running"),
    ("budget_exhausted", 3, "token_budget", "the token budget (3000) ran out"),
]


def record_one_run(work: Path, env: dict[str, str]) -> Path:
    """A real run, recorded by the real cub; returns its directory."""
    project = work / "source"
    project.mkdir()
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *args], cwd=project, env=env, check=True)
    (project / ".cub").mkdir()
    (project / ".cub" / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    agent = work / "agent"
    agent.write_text(AGENT.format(python=sys.executable))
    agent.chmod(0o755)
    argv = [sys.executable, "-m", "cub", "run", "--harness", "command", "--harness-cmd", str(agent)]
    result = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"recording a run failed ({result.returncode}):\n{result.stderr}")
    return (runs_dir(project) / "latest").resolve()


def synthesise(source: Path, project: Path, count: int) -> None:
    runs = runs_dir(project)
    runs.mkdir(parents=True)
    old_id = source.name
    run_json = json.loads((source / "run.json").read_text())
    status_json = json.loads((source / "status.json").read_text())
    events = (source / "events.jsonl").read_bytes()
    lock = (source / "runner.lock").read_bytes() if (source / "runner.lock").exists() else b""
    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    for i in range(count):
        started = newest - timedelta(minutes=i)
        ended = started + timedelta(seconds=run_json["duration_s"])
        run_id = f"run-{started:%Y%m%d-%H%M%S}-{i % 65536:04x}"
        state, code, reason_code, reason = ENDINGS[i % len(ENDINGS)]
        stamps = {
            "run_id": run_id,
            "started_at": started.isoformat(timespec="milliseconds"),
            "ended_at": ended.isoformat(timespec="milliseconds"),
        }
        record = {
            **run_json,
            **stamps,
            "state": state,
            "exit_code": code,
            "reason_code": reason_code,
            "reason": reason,
            "branch": f"cub/{run_id}",
        }
        status = {**status_json, **stamps, "state": state, "updated_at": stamps["ended_at"]}
        status.pop("ended_at", None)
        run_dir = runs / run_id
        run_dir.mkdir(mode=0o700)
        (run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")
        (run_dir / "status.json").write_text(json.dumps(status, indent=2) + "\n")
        (run_dir / "events.jsonl").write_bytes(events.replace(old_id.encode(), run_id.encode()))
        (run_dir / "runner.lock").write_bytes(lock)
    newest_id = max(p.name for p in runs.iterdir())
    os.symlink(newest_id, runs / "latest")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", metavar="FILE", help="also save a cProfile of one listing")
    args = parser.parse_args()
    cub = [sys.executable, "-m", "cub"]
    with tempfile.TemporaryDirectory(prefix="cub-bench-runs-") as tmp:
        work = Path(tmp)
        env = environment(work)
        source = record_one_run(work, env)
        project = work / "proj"
        (project / ".cub").mkdir(parents=True)
        start = time.perf_counter()
        synthesise(source, project, args.runs)
        shutil.rmtree(work / "source")
        print(f"synthesised {args.runs} runs in {time.perf_counter() - start:.1f} s")

        listing = subprocess.run([*cub, "runs", "list"], cwd=project, env=env, capture_output=True)
        lines = listing.stdout.count(b"\n")
        if lines != args.runs + 1:
            raise SystemExit(f"`cub runs list` printed {lines} lines, expected {args.runs + 1}")
        load = os.getloadavg()
        rows = [
            (f"cub runs list ({args.runs} runs)", [*cub, "runs", "list"]),
            (f"cub runs list --json ({args.runs} runs)", [*cub, "runs", "list", "--json"]),
            ("cub runs list --limit 20", [*cub, "runs", "list", "--limit", "20"]),
            ("cub status", [*cub, "status"]),
        ]
        results = [
            (name, *best_of_runs(argv, project, env, args.repeat, stderr_fails=True))
            for name, argv in rows
        ]
        if args.profile:
            subprocess.run(
                [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "cub", "runs", "list"],
                cwd=project,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
    ok = True
    print(f"load average before timing: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'benchmark':<40} {'target':>9} {'wall':>8} {'cpu':>8}")
    for name, wall, cpu in results:
        met = wall < TARGET_MS
        ok = ok and met
        limit = f"<{TARGET_MS} ms"
        print(
            f"{name:<40} {limit:>9} {wall:>5.0f} ms {cpu:>5.0f} ms  best of {args.repeat}, "
            f"{'ok' if met else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
