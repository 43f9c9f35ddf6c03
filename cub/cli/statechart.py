"""`cub statechart`: the run state chart as Mermaid, DOT, SVG or JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cub.chart.definition import RUN_CHART
from cub.chart.render import render
from cub.errors import CubError


@click.command("statechart")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "svg", "json"]),
    default="mermaid",
    show_default=True,
    help="Output format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def statechart_command(fmt: str, output: Path | None) -> int:
    """Print or export the run state chart (the one cub's runs are driven by)."""
    try:
        rendered = render(RUN_CHART, fmt)
    except CubError as exc:
        print(f"cub statechart: error: {exc}", file=sys.stderr)
        return 1
    data = rendered if isinstance(rendered, bytes) else rendered.encode()
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        print(f"wrote {output}", file=sys.stderr)
    return 0
