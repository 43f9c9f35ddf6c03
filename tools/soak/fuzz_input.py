"""Input fuzz soak: thousands of generated configs, task files, `bd` answers, flag sets and
argv bytes thrown at cub, with the checks of tests/helpers/fuzz.py (the CI runs a few hundred
per kind in tests/fuzz/).

    .venv/bin/python tools/soak/fuzz_input.py [--examples N] [--kinds K,...] [--seed S] [--record]

Each kind runs in a process of its own, all kinds side by side. With ``--record`` a section is
appended to tools/soak/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools" / "bench"))

from benchkit import append_section, machine_line  # noqa: E402

from tests.helpers.fuzz import KINDS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="per kind")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--real-every", type=int, default=100, help="run every Nth config/task file for real"
    )
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    started = time.monotonic()
    workers = {
        kind: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.fuzz",
                kind,
                str(args.examples),
                str(args.seed),
                str(args.real_every),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for kind in kinds
    }
    rows, failed = [], 0
    for kind, worker in workers.items():
        out, _ = worker.communicate()
        print(out, end="")
        failed += worker.returncode != 0
        first = out.splitlines()[0] if out else f"{kind}: no output"
        rows.append(f"| {kind} | {first.partition(': ')[2]} | exit {worker.returncode} |")
    elapsed = time.monotonic() - started
    print(f"{len(kinds)} kinds, {failed} with problems, {elapsed:.0f} s")
    if args.record:
        command = " ".join(["tools/soak/fuzz_input.py", *sys.argv[1:]])
        append_section(
            REPO / "tools" / "soak" / "RESULTS.md",
            "Input fuzz soak",
            [
                f"`{command}` on {machine_line()}, {elapsed:.0f} s, seed {args.seed}, "
                f"{args.examples} generated inputs per kind (the task-file kind checks "
                "`cub run --ready` and `cub tasks list` for each; every "
                f"{args.real_every}th config and task file is also run for real).",
                "",
                "| kind | result | worker |",
                "|---|---|---|",
                *rows,
                "",
                f"Result: {'nothing found' if not failed else f'{failed} kind(s) with problems'}.",
                "",
            ],
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
