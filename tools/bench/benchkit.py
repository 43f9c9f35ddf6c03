"""What the benchmarks share: an isolated environment, a git project with a backlog, timing a
new process, and appending a section to RESULTS.md."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYCACHE = Path(tempfile.gettempdir()) / "cub-bench-pycache"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@cub.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@cub.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def environment(home: Path) -> dict[str, str]:
    """The caller's environment without CUB_* settings, with HOME and git config in ``home``
    and this checkout first on PYTHONPATH (so `python -m cub` runs this checkout's cub)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUB_")}
    env.update(GIT_ENV)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    env["GIT_CONFIG_GLOBAL"] = str(home / ".gitconfig")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # An installed cub runs from compiled bytecode. Without a cache (PYTHONDONTWRITEBYTECODE
    # set, as in some CI and agent environments) every new process compiles each module it
    # imports, 60-100 ms that would be measured as cub's. The cache is kept outside the
    # checkout, keyed by each source file's path and mtime.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
    return env


def make_project(path: Path, tasks: Iterable[Mapping[str, Any]], env: dict[str, str]) -> None:
    """A git repository with one commit and ``tasks`` as its .cub/tasks.jsonl."""
    path.mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (path / "README.md").write_text("bench project\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "initial commit")
    (path / ".cub").mkdir()
    (path / ".cub" / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))


def best_of_runs(
    argv: list[str], cwd: Path, env: dict[str, str], repeat: int, *, stderr_fails: bool = False
) -> tuple[float, float]:
    """Best wall time and best CPU time (user + system, of the child) in ms of ``repeat`` runs
    of ``argv`` as a new process, output captured. On a busy machine the CPU time says what the
    wall time would be on an idle one. A run that exits non-zero (or with ``stderr_fails``,
    writes to stderr) stops the benchmark."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0 or (stderr_fails and result.stderr):
            raise SystemExit(f"{argv} failed ({result.returncode}):\n{result.stderr}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best_wall, best_cpu = min(best_wall, elapsed), min(best_cpu, cpu)
    return best_wall * 1000, best_cpu * 1000


def machine_line() -> str:
    """The machine a result was measured on: "2 CPUs, Python 3.11.7, Linux 6.18..."."""
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def append_section(path: Path, title: str, lines: Iterable[str]) -> None:
    """Append a section headed "## title (date time UTC)" with ``lines`` below it to ``path``."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(["", f"## {title} ({stamp})", "", *lines])
    # One append of the whole section: other writers may be appending to the same file.
    with path.open("a", encoding="utf-8") as out:
        out.write(text)
