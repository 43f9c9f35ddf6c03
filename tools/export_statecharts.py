#!/usr/bin/env python3
"""Export the run chart to statecharts/ (Mermaid, DOT, SVG when `dot` is installed, and the
exit-path audit), or with --check fail when the committed files differ from the code."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Runnable from a checkout without installing cub.
sys.path.insert(0, str(ROOT))

from cub.chart.audit import exit_paths_markdown  # noqa: E402
from cub.chart.checks import check_chart  # noqa: E402
from cub.chart.definition import RUN_CHART, Chart  # noqa: E402
from cub.chart.render import to_dot, to_mermaid, to_svg  # noqa: E402

# Compared by --check. SVG is not: its bytes depend on the installed graphviz version.
TEXT_FILES: dict[str, Callable[[Chart], str]] = {
    "run.mmd": to_mermaid,
    "run.dot": to_dot,
    "exit-paths.md": exit_paths_markdown,
}


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def stale_files(directory: Path, chart: Chart) -> list[Path]:
    stale = []
    for name, renderer in TEXT_FILES.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != renderer(chart).encode():
            stale.append(path)
    return stale


def export(directory: Path, chart: Chart) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, renderer in TEXT_FILES.items():
        path = directory / name
        path.write_bytes(renderer(chart).encode())
        written.append(path)
    if shutil.which("dot"):
        path = directory / "run.svg"
        path.write_bytes(to_svg(chart))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; write nothing")
    parser.add_argument(
        "--dir",
        type=Path,
        default=ROOT / "statecharts",
        help="where the files live (default: statecharts/ in the repo)",
    )
    args = parser.parse_args(argv)
    check_chart(RUN_CHART)
    if args.check:
        stale = stale_files(args.dir, RUN_CHART)
        for path in stale:
            print(f"{_shown(path)} differs from the code; run tools/export_statecharts.py")
        if not stale:
            print("statecharts are up to date")
        return 1 if stale else 0
    for path in export(args.dir, RUN_CHART):
        print(f"wrote {_shown(path)}")
    if not shutil.which("dot"):
        print("skipped run.svg: the graphviz 'dot' program is not installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
