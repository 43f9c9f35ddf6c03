"""`cub sandbox build`: build the Docker image `cub run --sandbox` starts its container from.

Returns 0 or 1 (errors are one line on stderr) for `cub.cli.main` to exit with.
"""

from __future__ import annotations

from pathlib import Path

import click

from cub.config.load import load_config
from cub.config.schema import SandboxConfig
from cub.errors import CubError, one_line
from cub.modes.sandbox.container import answering_client
from cub.modes.sandbox.image import (
    ImageBuildError,
    build_image,
    check_agent_package,
    dockerfile,
)
from cub.workspace.root import find_project_root


@click.group("sandbox")
def sandbox_group() -> None:
    """Build the Docker image sandboxed runs use."""


def _default_tag() -> str:
    """``sandbox.image`` from the project's (and user's) config, else the built-in default."""
    root = find_project_root(Path.cwd())
    if root is None:
        return SandboxConfig().image
    return load_config(root).config.sandbox.image


@sandbox_group.command("build")
@click.option(
    "--base",
    metavar="IMAGE",
    help="A local image that has python3 (same minor version as this cub's) and git: copy "
    "cub and its dependencies into it (no pip, no network). Without it, build from "
    "python:3.12-slim with pip. With --agent, IMAGE must have apt-get and pip.",
)
@click.option(
    "--tag",
    metavar="NAME",
    help="Name of the image to build (default: config sandbox.image, else cub-sandbox:latest).",
)
@click.option(
    "--agent",
    metavar="NPM_PACKAGE",
    help="Also install this agent CLI from npm, e.g. @anthropic-ai/claude-code.",
)
@click.option("--print-dockerfile", is_flag=True, help="Print the Dockerfile and build nothing.")
@click.option("-v", "--verbose", is_flag=True, help="Show the build's output.")
def build_command(
    base: str | None, tag: str | None, agent: str | None, print_dockerfile: bool, verbose: bool
) -> int:
    """Build the sandbox image from cub's own source (this checkout or installation)."""
    try:
        if agent is not None:
            check_agent_package(agent)
        if print_dockerfile:
            click.echo(dockerfile(base, agent), nl=False)
            return 0
        tag = tag or _default_tag()
    except (ImageBuildError, CubError) as exc:
        click.echo(f"cub sandbox build: error: {exc}", err=True)
        return 1
    try:
        client = answering_client(600)
    except Exception as exc:
        detail = one_line(exc)
        click.echo(f"cub sandbox build: error: no Docker engine answered: {detail}", err=True)
        return 1
    progress = (lambda line: click.echo(line, err=True)) if verbose else None
    try:
        image_id = build_image(client, tag, base=base, agent=agent, progress=progress)
    except ImageBuildError as exc:
        click.echo(f"cub sandbox build: error: {exc}", err=True)
        return 1
    click.echo(f"built {tag} ({image_id[:19]})")
    return 0
