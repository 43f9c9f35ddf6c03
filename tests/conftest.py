from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.env import isolate_environment


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """No test reads or writes the real home directory or user config; git identity is pinned."""
    home = tmp_path_factory.mktemp("home")
    isolate_environment(home, monkeypatch)
    return home
