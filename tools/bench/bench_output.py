"""Agent output through cub: an agent printing SIZE MiB of 99-byte lines, written to a file by
itself, then run by `cub run -H command`, then by `cub run -H claude` (a stand-in `claude` on
PATH printing the same plain lines between two stream-json events), with cub's peak memory.

    .venv/bin/python tools/bench/bench_output.py [--mib 256] [--line 99 | --text log]
                                [--repeat 3] [--no-redaction] [--log-cap] [--on-disk]
                                [--settle 0] [--record]

``--line N`` prints lines of N bytes (newline included); ``--line 0`` prints no newline at all.
``--text log`` prints what a test suite does instead (test results, log records, warnings,
tracebacks): the text the secret search passes fastest, where lines of one letter hold runs of
64 key characters that it leaves to RE2.
Each way is run ``--repeat`` times, interleaved, after an ``os.sync()`` (so no run pays for the
last one's writeback); cub's CPU is its own, the agent reporting its own CPU to be taken out.
A way's wall ends when its process does, its output in the page cache; with ``--on-disk``, when
an ``os.sync()`` after it returns: the agent's file, or cub's harness.log, on the disk.

harness.log keeps all of the output unless ``--log-cap`` is given: then cub's default cap
(`loop.log_max_bytes`, 256 MiB) applies, as it does for a user who has not raised it, and
what is beyond it is read, searched and parsed but not written.

``--settle S`` waits S seconds before each way. On these virtual machines memory a process
frees goes back to the host within about 20 s, and a gigabyte written into the page cache
after that costs 2.6 s instead of 0.2 s (taking the memory back, in the kernel's copy): with
``--settle 30`` every way starts as after a quiet spell, without it each reuses the memory the
last one freed. The agent writing to a file pays this as cub's harness.log does.

Targets (issue: output at disk speed): within 3x the agent writing to a file with `command`,
5x with `claude`; cub's peak RSS under 150 MiB whatever the volume. The memory bound is tested
(tests/agents/test_output.py); the times are this benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
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
line = {line}
block = line * max(1, 1000000 // len(line))
total = {mib} * 1024 * 1024
out = sys.stdout.buffer
{head}
written = 0
while written < total:
    out.write(block)
    written += len(block)
{tail}
out.flush()
user, system = os.times()[:2]  # the agent's own CPU, so cub's can be told apart from it
with open(os.environ["BENCH_AGENT_CPU"], "w") as f:
    f.write(str(user + system))
"""
CLAUDE_HEAD = 'out.write(b\'{"type":"system","subtype":"init","session_id":"s","model":"m"}\\n\')'
CLAUDE_TAIL = (
    'out.write(b\'\\n{"type":"result","subtype":"success","is_error":false,"result":"done",'
    '"usage":{"input_tokens":1,"output_tokens":1},"total_cost_usd":0.0}\\n\')'
)


def line_literal(size: int) -> str:
    """The Python literal of one printed line of ``size`` bytes (0: text without newline)."""
    return repr(b"x" * 4096) if size == 0 else repr(b"x" * (size - 1) + b"\n")


def suite_output(lines: int = 1200) -> bytes:
    """What a test suite prints (``--text log``): verbose test results, log records, compiler
    warnings and tracebacks, about 90 bytes a line, no two lines alike."""
    kinds = [
        "tests/unit/test_module_{a}.py::TestCase{b}::test_behaviour_{i} PASSED [{p:3d}%]",
        "2026-12-04T09:{m:02d}:{s:02d}.{i:03d}Z INFO worker-{b} request id={i:08x} took {a}.{b} ms",
        "src/parser/module_{a}.c:{i}:{b}: warning: unused variable 'tmp_{b}' [-Wunused-variable]",
        '  File "/home/dev/project/src/pkg/module_{a}.py", line {i}, in handle_{b}',
        "    assert response.status_code == 200, f'unexpected {{response.status_code}}'  # {i}",
    ]
    return "".join(
        kinds[i % len(kinds)].format(i=i, a=i % 97, b=i % 13, p=i % 101, m=i % 60, s=i % 59) + "\n"
        for i in range(lines)
    ).encode()


def write_agent(path: Path, mib: int, *, claude: bool, line: int = 99, text: str = "x") -> None:
    path.write_text(
        PRINTER.format(
            python=sys.executable,
            mib=mib,
            line=line_literal(line) if text == "x" else repr(suite_output()),
            head=CLAUDE_HEAD if claude else "",
            tail=CLAUDE_TAIL if claude else "",
        )
    )
    path.chmod(0o755)


def children_cpu() -> float:
    """CPU seconds (user and system) of every descendant waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_of(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (with every descendant's) and the peak RSS (MiB) of the
    process itself, sampled every 20 ms."""
    cpu_before = children_cpu()
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
    return elapsed, children_cpu() - cpu_before, peak / (1 << 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--line", type=int, default=99, help="bytes per line; 0: no newline")
    parser.add_argument(
        "--text",
        choices=["x", "log"],
        default="x",
        help="x: lines of one letter (--line bytes); log: what a test suite prints",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians shown")
    parser.add_argument(
        "--no-redaction", action="store_true", help="what cub costs without its secret search"
    )
    parser.add_argument(
        "--log-cap",
        action="store_true",
        help="harness.log under cub's default cap (256 MiB) instead of keeping everything",
    )
    parser.add_argument(
        "--on-disk",
        action="store_true",
        help="each wall until the output is on disk (an os.sync() after each way ends)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds to wait before each way (30: memory freed earlier is back with the host)",
    )
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cub-bench-output-"))
    env = environment(root / "home")
    env["BENCH_AGENT_CPU"] = str(root / "agent-cpu")
    config: dict[str, object] = {}
    if not args.log_cap:  # harness.log keeps everything (its default cap is 256 MiB)
        config["loop"] = {"log_max_bytes": 4 << 30}
    if args.no_redaction:
        config["redaction"] = {"use_defaults": False}
    plain, claude_dir = root / "agent", root / "bin"
    ways = {
        "agent > file": None,
        "cub -H command": (["-H", "command", "--harness-cmd", str(plain)], {}),
        "cub -H claude": (["-H", "claude"], {"PATH": f"{claude_dir}:{env['PATH']}"}),
    }
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    try:
        claude_dir.mkdir()
        write_agent(plain, args.mib, claude=False, line=args.line, text=args.text)
        write_agent(claude_dir / "claude", args.mib, claude=True, line=args.line, text=args.text)
        for attempt in range(args.repeat):  # interleaved, so a change of load hits all alike
            for name, way in ways.items():
                if way is None:
                    settle(args.settle)
                    runs[name].append(agent_to_file(plain, root, env, on_disk=args.on_disk))
                    continue
                project = root / f"p{attempt}-{name.split()[-1]}"
                make_project(project, [{"id": "t1", "title": "print"}], env)
                (project / ".cub" / "config.json").write_text(json.dumps(config))
                settle(args.settle)
                cub = [sys.executable, "-m", "cub", "run", "--in-place", "--allow-dirty", *way[0]]
                elapsed, cpu, peak = peak_rss_of(cub, project, {**env, **way[1]})
                elapsed += synced() if args.on_disk else 0.0
                agent_cpu = float((root / "agent-cpu").read_text())
                runs[name].append((elapsed, cpu - agent_cpu, peak))
                shutil.rmtree(project)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    to_file = statistics.median(wall for wall, _, _ in runs["agent > file"])
    rows = []
    for name, results in runs.items():
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        peak = max(r[2] for r in results)
        walls = ", ".join(f"{r[0]:.1f}" for r in results)
        cpu_text = f"{cpu:.2f} s (the agent's)" if name == "agent > file" else f"{cpu:.2f} s"
        peak_text = "—" if name == "agent > file" else f"{peak:.0f} MiB"
        ratio = f"{wall / to_file:.1f}x"
        rows.append(f"| {name} | {wall:.2f} s ({walls}) | {ratio} | {cpu_text} | {peak_text} |")
        print(rows[-1], flush=True)
    if args.record:
        append_section(
            REPO / "tools" / "bench" / "RESULTS.md",
            f"agent output: {args.mib} MiB of "
            + (
                "test-suite output"
                if args.text == "log"
                else f"{args.line}-byte lines"
                if args.line
                else "text without a newline"
            )
            + (", redaction off" if args.no_redaction else "")
            + (", harness.log under its default cap" if args.log_cap else "")
            + (", until on disk" if args.on_disk else "")
            + (f", {args.settle:g} s idle before each" if args.settle else ""),
            [
                f"`tools/bench/bench_output.py --mib {args.mib} "
                + ("--text log" if args.text == "log" else f"--line {args.line}")
                + f" --repeat {args.repeat}{' --no-redaction' if args.no_redaction else ''}"
                f"{' --log-cap' if args.log_cap else ''}"
                f"{' --on-disk' if args.on_disk else ''}"
                f"{f' --settle {args.settle:g}' if args.settle else ''}` on "
                f"{machine_line()}, load {os.getloadavg()[0]:.1f}. Medians "
                "(each run's wall in brackets); cub's CPU is its own, the agent's taken out.",
                "",
                "| how | wall | vs file | CPU | cub's peak RSS |",
                "|---|---|---|---|---|",
                *rows,
                "",
            ],
        )
    return 0


def settle(seconds: float) -> None:
    """Before a way: the last run's writeback done (not this one's to pay), then ``seconds``
    of quiet."""
    os.sync()
    time.sleep(seconds)


def synced() -> float:
    """Seconds an os.sync() takes: what of the output was still only in the page cache."""
    started = time.monotonic()
    os.sync()
    return time.monotonic() - started


def agent_to_file(
    agent: Path, root: Path, env: dict[str, str], *, on_disk: bool = False
) -> tuple[float, float, float]:
    """The agent writing to a file by itself: wall (to the page cache, or ``on_disk``) and its
    own CPU seconds."""
    started = time.monotonic()
    with open(root / "out.txt", "wb") as sink:
        subprocess.run([str(agent)], stdout=sink, env=env, check=True)
    elapsed = time.monotonic() - started + (synced() if on_disk else 0.0)
    (root / "out.txt").unlink()
    return elapsed, float((root / "agent-cpu").read_text()), 0.0


if __name__ == "__main__":
    sys.exit(main())
