"""Agent output through cub: an agent printing SIZE MiB of 99-byte lines, written to a file by
itself, then run by `cub run -H command`, then by `cub run -H claude` (a stand-in `claude` on
PATH printing the same plain lines between two stream-json events), with cub's peak memory.

    .venv/bin/python tools/bench/bench_output.py [--mib 256] [--record]

Targets (issue: output at disk speed): within 3x the agent writing to a file with `command`,
5x with `claude`; cub's peak RSS under 150 MiB whatever the volume. The memory bound is tested
(tests/agents/test_output.py); the times are this benchmark's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import REPO, append_section, environment, machine_line, make_project

PRINTER = """#!{python}
import os, sys
if "--version" in sys.argv:
    sys.exit(print("1.0 (stand-in)"))
line = b"x" * 98 + b"\\n"
block = line * 10000
total = {mib} * 1024 * 1024
out = sys.stdout.buffer
{head}
written = 0
while written < total:
    out.write(block)
    written += len(block)
{tail}
out.flush()
"""
CLAUDE_HEAD = 'out.write(b\'{"type":"system","subtype":"init","session_id":"s","model":"m"}\\n\')'
CLAUDE_TAIL = (
    'out.write(b\'{"type":"result","subtype":"success","is_error":false,"result":"done",'
    '"usage":{"input_tokens":1,"output_tokens":1},"total_cost_usd":0.0}\\n\')'
)


def write_agent(path: Path, mib: int, *, claude: bool) -> None:
    path.write_text(
        PRINTER.format(
            python=sys.executable,
            mib=mib,
            head=CLAUDE_HEAD if claude else "",
            tail=CLAUDE_TAIL if claude else "",
        )
    )
    path.chmod(0o755)


def peak_rss_of(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MiB) of the process itself, sampled every 20 ms."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    peak = 0
    watched = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {err.decode()[-1000:]}")
    return elapsed, peak / (1 << 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cub-bench-output-"))
    env = environment(root / "home")
    # harness.log keeps everything (its default cap is 256 MiB).
    config = '{"loop": {"log_max_bytes": 4294967296}}'
    try:
        plain, claude_dir = root / "agent", root / "bin"
        claude_dir.mkdir()
        write_agent(plain, args.mib, claude=False)
        write_agent(claude_dir / "claude", args.mib, claude=True)
        started = time.monotonic()
        with open(root / "out.txt", "wb") as sink:
            subprocess.run([str(plain)], stdout=sink, check=True)
        to_file = time.monotonic() - started
        rows = [f"| agent > file | {to_file:.1f} s | 1.0x | — |"]
        for name, argv, extra in (
            ("cub -H command", ["-H", "command", "--harness-cmd", str(plain)], {}),
            ("cub -H claude", ["-H", "claude"], {"PATH": f"{claude_dir}:{env['PATH']}"}),
        ):
            project = root / f"p-{name.split()[-1]}"
            make_project(project, [{"id": "t1", "title": "print"}], env)
            (project / ".cub" / "config.json").write_text(config)
            cub = [sys.executable, "-m", "cub", "run", "--in-place", "--allow-dirty", *argv]
            elapsed, peak = peak_rss_of(cub, project, {**env, **extra})
            rows.append(f"| {name} | {elapsed:.1f} s | {elapsed / to_file:.1f}x | {peak:.0f} MiB |")
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.record:
        append_section(
            REPO / "tools" / "bench" / "RESULTS.md",
            f"agent output: {args.mib} MiB of 99-byte lines",
            [
                f"`tools/bench/bench_output.py --mib {args.mib}` on {machine_line()}, load "
                f"{os.getloadavg()[0]:.1f}.",
                "",
                "| how | wall | vs file | cub's peak RSS |",
                "|---|---|---|---|",
                *rows,
                "",
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
