"""`cub init`: set up `.cub/` in a project."""

from __future__ import annotations

from pathlib import Path

import click

from cub.scaffold import init_project
from cub.workspace.root import find_project_root


@click.command("init")
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to create .cub/ (default: the enclosing git repository, else here).",
)
def init_command(project_dir: Path | None) -> int:
    """Create .cub/ with a default config, an empty task file and runloop.md."""
    root = project_dir or find_project_root(Path.cwd()) or Path.cwd()
    try:
        created = init_project(root)
    except OSError as exc:
        click.echo(f"cub init: cannot set up {root}: {exc.strerror or exc}", err=True)
        return 1
    if not created:
        click.echo(f"{root} is already set up for cub; nothing to do")
        return 0
    for item in created:
        click.echo(f"created {item}")
    click.echo(NEXT_STEPS)
    return 0


NEXT_STEPS = """
next steps:
  cub tasks add "Fix the flaky login test" --priority 1   # fill the backlog
  cub run --ready                                          # what would run, in order
  cub run                                                  # run it (agent auto-detected;
                                                           #   -H claude|codex|gemini|opencode)
  cub status                                               # in the morning: how it ended"""
