"""The environment every test (and every cub it starts) runs in: a private home, no user or
system git config, a pinned git identity, and no CUB_* setting inherited from the caller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.git import GIT_IDENTITY


def isolate_environment(home: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Point this process's environment at ``home``. With ``monkeypatch`` the change is undone
    with it; without one (outside pytest, as in the soak) it lasts for the rest of the process."""
    home.mkdir(parents=True, exist_ok=True)
    mp = monkeypatch if monkeypatch is not None else pytest.MonkeyPatch()
    mp.setenv("HOME", str(home))
    mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    mp.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
    mp.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for key, value in GIT_IDENTITY.items():
        mp.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("CUB_")]:
        mp.delenv(key)
