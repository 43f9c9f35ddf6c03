"""Fixtures of the end-to-end tests: the real `cub` process, real git, scripted agents."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.agents import processes_with_token


@pytest.fixture
def token() -> Iterator[str]:
    """Put in cub's environment (TEST_TOKEN_VAR), so its agents carry it; whatever of theirs is
    left afterwards is killed."""
    value = uuid.uuid4().hex
    yield value
    for proc in processes_with_token(value):
        proc.kill()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A directory outside the project for agent scripts and what they leave behind."""
    path = tmp_path / "bin"
    path.mkdir()
    return path


# The modules that start the real agent CLIs (tests/helpers/model_servers/). `tools/test` runs
# them in a network namespace of their own with only loopback, so nothing they do can reach
# past 127.0.0.1 whatever a CLI tries.
REAL_CLI_MODULES = {
    "test_real_claude",
    "test_real_codex",
    "test_real_gemini",
    "test_real_opencode",
    "test_real_clis",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in REAL_CLI_MODULES:
            item.add_marker(pytest.mark.real_cli)
