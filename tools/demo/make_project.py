#!/usr/bin/env python3
"""Create the demo project: a git repository with a four-task backlog and the demo agent.

The git identity of its first commit comes from the environment: tools/demo/run sets it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def create(target: Path, cub: str) -> None:
    target.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=target, check=True)
    (target / "README.md").write_text("# greeting service (a cub demo project)\n")
    subprocess.run(["git", "add", "README.md"], cwd=target, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "initial commit"], cwd=target, check=True)
    subprocess.run([cub, "init"], cwd=target, check=True, stdout=subprocess.DEVNULL)
    shutil.copyfile(HERE / "tasks.jsonl", target / ".cub" / "tasks.jsonl")
    shutil.copy2(HERE / "agent.py", target / ".cub" / "demo-agent.py")


if __name__ == "__main__":
    destination = Path(sys.argv[1])
    if destination.exists():
        print(f"{destination} already exists", file=sys.stderr)
        sys.exit(1)
    create(destination, sys.argv[2] if len(sys.argv) > 2 else "cub")
