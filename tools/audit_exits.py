#!/usr/bin/env python3
"""Fail when code under cub/ ends the process anywhere but `main` in cub/cli/main.py.

With --write, also regenerate statecharts/exit-paths.md from the chart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Runnable from a checkout without installing cub.
sys.path.insert(0, str(ROOT))

from cub.chart.audit import exit_paths_markdown, find_process_exits, find_scenarios  # noqa: E402
from cub.chart.definition import RUN_CHART  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--write", action="store_true", help="also regenerate statecharts/exit-paths.md"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository to scan")
    args = parser.parse_args(argv)
    if args.write:
        target = args.root / "statecharts" / "exit-paths.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        scenarios = find_scenarios(args.root)
        target.write_bytes(exit_paths_markdown(RUN_CHART, scenarios).encode())
        print(f"wrote {target}")
    findings = find_process_exits(args.root)
    for finding in findings:
        print(finding)
    if findings:
        print(
            f"{len(findings)} process exit(s) outside cub/cli/main.py:main; "
            "end the run through the machine instead"
        )
        return 1
    print("no process exits outside cub/cli/main.py:main")
    return 0


if __name__ == "__main__":
    sys.exit(main())
