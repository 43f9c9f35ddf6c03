"""Consecutive `--parallel` runs: N runs of `cub run --parallel WIDTH` over 16 tasks whose agent
commits at once, each in a fresh project, every one checked as a user would read it the next
morning.

    .venv/bin/python tools/soak/parallel_runs.py [--runs 50] [--width 8] [--tasks 16] [--record]

A run passes when it exits 0 `completed`, lists one completed child per task, every child has
its own run.json, every task is closed, every task's file is on the run branch, and no run
directory is left without a run.json. The first failure stops the soak and keeps its project.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools" / "bench"))

from benchkit import append_section, environment, machine_line, make_project  # noqa: E402

from cub.records.location import runs_dir  # noqa: E402

AGENT = """#!{python}
import os, subprocess
name = os.environ["CUB_TASK_ID"] + ".txt"
open(name, "w").write("done\\n")
subprocess.run(["git", "add", name], check=True)
subprocess.run(["git", "commit", "-qm", name], check=True)
"""


def problems(project: Path, tasks: int, done: subprocess.CompletedProcess[str]) -> list[str]:
    found = []
    if done.returncode != 0:
        found.append(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
    runs = runs_dir(project)
    records = {d.name: d / "run.json" for d in runs.iterdir() if d.is_dir() and not d.is_symlink()}
    unfinished = [name for name, path in records.items() if not path.exists()]
    if unfinished:
        found.append(f"run directories without run.json: {unfinished}")
    parents = [
        path.parent
        for path in records.values()
        if path.exists() and json.loads(path.read_text())["parent_run_id"] is None
    ]
    if len(parents) != 1:
        return [*found, f"expected one parent run, found {[p.name for p in parents]}"]
    record = json.loads((parents[0] / "run.json").read_text())
    if record["state"] != "completed":
        found.append(f"parent {record['state']} ({record['reason_code']}): {record['reason']}")
    children = record["children"]
    if len(children) != tasks or {c["state"] for c in children} != {"completed"}:
        found.append(f"children: {[(c['task_id'], c['state']) for c in children]}")
    ledger_view = subprocess.run(
        [sys.executable, "-m", "cub", "tasks", "list", "--json"],
        cwd=project, capture_output=True, text=True,
    )  # fmt: skip
    if ledger_view.returncode != 0:
        return [*found, f"cub tasks list failed: {ledger_view.stderr.strip()[-300:]}"]
    statuses = {t["id"]: t["status"] for t in json.loads(ledger_view.stdout)}
    open_ones = sorted(k for k, v in statuses.items() if v != "closed")
    if open_ones:
        found.append(f"tasks not closed: {open_ones}")
    branch = record.get("branch")
    if branch:
        files = subprocess.run(
            ["git", "ls-tree", "--name-only", branch], cwd=project, capture_output=True,
            text=True,
        ).stdout.split()  # fmt: skip
        missing = [f"t{i}.txt" for i in range(tasks) if f"t{i}.txt" not in files]
        if missing:
            found.append(f"not merged: {missing}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cub-soak-parallel-"))
    env = environment(root / "home")
    env["XDG_STATE_HOME"] = str(root / "state")
    agent = root / "agent"
    agent.write_text(AGENT.format(python=sys.executable))
    agent.chmod(0o755)
    started = time.monotonic()
    failure = None
    passed = 0
    for n in range(args.runs):
        project = root / f"p{n}"
        make_project(
            project, [{"id": f"t{i}", "title": f"task {i}"} for i in range(args.tasks)], env
        )
        argv = [sys.executable, "-m", "cub", "run", "--parallel", str(args.width)]
        argv += ["-H", "command", "--harness-cmd", str(agent)]
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True)
        found = problems(project, args.tasks, done)
        if found:
            failure = f"run {n + 1}: " + "; ".join(found) + f" (kept in {project})"
            break
        passed += 1
        shutil.rmtree(project, ignore_errors=True)
        print(f"run {n + 1}/{args.runs} ok", flush=True)
    elapsed = time.monotonic() - started
    line = (
        f"{passed} of {args.runs} consecutive `--parallel {args.width}` runs of {args.tasks} "
        f"tasks passed in {elapsed:.0f} s" + (f"; {failure}" if failure else "")
    )
    print(line)
    if failure is None:
        shutil.rmtree(root, ignore_errors=True)
    if args.record:
        append_section(
            REPO / "tools" / "soak" / "RESULTS.md",
            "consecutive --parallel runs",
            [f"`tools/soak/parallel_runs.py` on {machine_line()}.", "", line, ""],
        )
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
