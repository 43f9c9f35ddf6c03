"""`cub sandbox build`: the image a sandboxed run starts its container from.

Two ways to build it, both through the Docker SDK (the classic builder of the engine's API; the
docker CLI's BuildKit is not needed):

- from a Python image (default ``python:3.12-slim``): the build context holds cub's source and a
  generated ``pyproject.toml``; the image installs git, cub with pip, and optionally an agent CLI
  from npm. This needs the network while building, as any `pip install` does.
- ``--base IMAGE``, for machines without a registry: IMAGE is a local image that already has
  ``python3`` (and git, for the agent's commits), e.g. one made from Debian packages by
  ``tools/docker/make-base-image.sh``. cub's source and its runtime dependencies are copied from
  the running interpreter's site-packages into ``/opt/cub/lib`` (on ``PYTHONPATH``), so no pip
  and no network are involved; the base image's Python must therefore be the same minor
  version as this one (compiled dependencies such as msgspec are version-specific).
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cub
from cub.errors import one_line

DEFAULT_BASE = "python:3.12-slim"
LIB_DIR = "/opt/cub/lib"

# An npm package spec: optional @scope/, a name, optional @version (no spaces, no shell syntax).
_NPM_PACKAGE = re.compile(
    r"(@[a-z0-9~][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*(@[A-Za-z0-9._^~<>=|*+-]+)?"
)

PIP_DOCKERFILE = """\
FROM {base}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends git ca-certificates{apt_extra} \\
 && rm -rf /var/lib/apt/lists/*
COPY src/ /opt/cub/src/
RUN pip install --no-cache-dir /opt/cub/src{npm_step}
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
LABEL org.cub.version="{version}"
"""

OFFLINE_DOCKERFILE = """\
FROM {base}
COPY lib/ {lib}/
COPY bin/ /usr/local/bin/
ENV PYTHONPATH={lib} HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
LABEL org.cub.version="{version}"
"""

LAUNCHER = '#!/bin/sh\nexec python3 -m cub "$@"\n'

GENERATED_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "cub"
version = "{version}"
requires-python = ">=3.11"
dependencies = {dependencies}

[project.scripts]
cub = "cub.cli.main:main"

[tool.setuptools.packages.find]
include = ["cub*"]

[tool.setuptools.package-data]
"cub.templates" = ["*.md"]
"""


class ImageBuildError(Exception):
    """One line saying why the image could not be built."""


def check_agent_package(agent: str) -> None:
    if not _NPM_PACKAGE.fullmatch(agent):
        raise ImageBuildError(
            f"--agent {agent!r} is not an npm package name (e.g. @anthropic-ai/claude-code)"
        )


def dockerfile(base: str | None, agent: str | None) -> str:
    """The Dockerfile `build_image` uses for these options."""
    if base is not None and agent is None:
        return OFFLINE_DOCKERFILE.format(base=base, lib=LIB_DIR, version=cub.__version__)
    apt_extra = " nodejs npm" if agent else ""
    npm_step = f" \\\n && npm install -g {agent} && npm cache clean --force" if agent else ""
    return PIP_DOCKERFILE.format(
        base=base or DEFAULT_BASE, apt_extra=apt_extra, npm_step=npm_step, version=cub.__version__
    )


# -- the build context ------------------------------------------------------------------------


def _package_files() -> Iterable[tuple[str, Path]]:
    """cub's own source files, as (path relative to the package's parent, file)."""
    package = Path(cub.__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield str(Path("cub") / path.relative_to(package)), path


def _runtime_requirements() -> list[str]:
    """cub's runtime requirements (no extras), as written in its metadata."""
    return [r for r in importlib.metadata.requires("cub") or [] if "extra" not in r]


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match is not None
    return match.group(0)


def runtime_distributions() -> list[importlib.metadata.Distribution]:
    """cub's runtime dependencies and theirs, as installed for this interpreter."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [(_requirement_name(r), ";" in r) for r in _runtime_requirements()]
    while pending:
        name, conditional = pending.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if conditional:  # a dependency for another platform (e.g. colorama on Windows)
                continue
            raise ImageBuildError(
                f"cub's dependency {name} is not installed for {sys.executable}"
            ) from None
        found[key] = dist
        for requirement in dist.requires or []:
            if "extra" not in requirement:
                pending.append((_requirement_name(requirement), ";" in requirement))
    return list(found.values())


def _distribution_files(dist: importlib.metadata.Distribution) -> Iterable[tuple[str, Path]]:
    for entry in dist.files or []:
        relative = Path(str(entry))
        if relative.parts[:1] == ("..",) or "__pycache__" in relative.parts:
            continue  # console scripts outside site-packages; bytecode
        path = Path(str(dist.locate_file(entry)))
        if path.is_file():
            yield str(relative), path


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    _add_bytes(tar, name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)


def build_context(base: str | None, agent: str | None) -> bytes:
    """The build context, as an uncompressed tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", dockerfile(base, agent).encode())
        if base is not None and agent is None:
            for name, path in _package_files():
                _add_file(tar, f"lib/{name}", path)
            for dist in runtime_distributions():
                for name, path in _distribution_files(dist):
                    _add_file(tar, f"lib/{name}", path)
            _add_bytes(tar, "bin/cub", LAUNCHER.encode(), 0o755)
        else:
            for name, path in _package_files():
                _add_file(tar, f"src/{name}", path)
            # A JSON string is a TOML string too: a marker's own quotes stay escaped.
            dependencies = json.dumps(_runtime_requirements())
            pyproject = GENERATED_PYPROJECT.format(
                version=cub.__version__, dependencies=dependencies
            )
            _add_bytes(tar, "src/pyproject.toml", pyproject.encode())
    return buffer.getvalue()


# -- building ---------------------------------------------------------------------------------


def _python_version(client: Any, image: str) -> str:
    """``major.minor`` of the image's python3, or an ImageBuildError saying it has none."""
    import docker  # optional (the sandbox extra), and slow to import

    try:
        client.images.get(image)  # never pull: a --base image is a local one
    except docker.errors.ImageNotFound:
        raise ImageBuildError(f"base image {image} not found in the local engine") from None
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot inspect base image {image}: {one_line(exc)}") from exc
    try:
        out = client.containers.run(
            image,
            ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            remove=True,
            network_mode="none",
            entrypoint=[],
        )
    except docker.errors.DockerException as exc:
        raise ImageBuildError(
            f"base image {image} has no working python3: {one_line(exc)}"
        ) from exc
    return bytes(out).decode().strip()


def build_image(
    client: Any,
    tag: str,
    *,
    base: str | None = None,
    agent: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Build the image; returns its id. ``ImageBuildError`` (one line) when it fails."""
    import docker  # optional (the sandbox extra), and slow to import

    if agent is not None:
        check_agent_package(agent)
    if base is not None and agent is None:
        here = "{}.{}".format(*sys.version_info[:2])
        theirs = _python_version(client, base)
        if theirs != here:
            raise ImageBuildError(
                f"base image {base} has Python {theirs}, but cub's compiled dependencies "
                f"here are for Python {here}; use a base image with Python {here}"
            )
    context = build_context(base, agent)
    try:
        image, logs = client.images.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
        )
    except docker.errors.DockerException as exc:  # BuildError included
        raise ImageBuildError(f"building {tag} failed: {one_line(exc)}") from exc
    if progress is not None:
        for chunk in logs:
            text = str(chunk.get("stream", "")).strip()
            if text:
                progress(text)
    _smoke_test(client, tag)
    return str(image.id)


def _smoke_test(client: Any, tag: str) -> None:
    """The image must be able to run cub (a missing dependency shows here, not mid-run)."""
    import docker  # optional (the sandbox extra), and slow to import

    try:
        client.containers.run(
            tag, ["python3", "-m", "cub", "--version"], remove=True, network_mode="none"
        )
    except docker.errors.ContainerError as exc:
        stderr = bytes(exc.stderr or b"").decode(errors="replace").strip().splitlines()
        detail = stderr[-1] if stderr else f"exit {exc.exit_status}"
        raise ImageBuildError(f"the image {tag} was built but cannot run cub: {detail}") from exc
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"the image {tag} cannot be started: {one_line(exc)}") from exc
