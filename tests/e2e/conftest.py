"""Fixtures of the end-to-end tests: the real `cub` process, real git, scripted agents."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A directory outside the project for agent scripts and what they leave behind."""
    path = tmp_path / "bin"
    path.mkdir()
    return path
