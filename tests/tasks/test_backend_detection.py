from __future__ import annotations

import json
from pathlib import Path

import pytest

from cub.config.schema import BackendConfig, Config
from cub.errors import Rejected
from cub.tasks.backend import open_backend
from cub.tasks.beads import BeadsBackend
from cub.tasks.jsonl import JsonlBackend
from cub.tasks.prd import PrdBackend


def config(mode: str = "auto", path: str | None = None) -> Config:
    return Config(backend=BackendConfig(mode=mode, path=path))  # type: ignore[arg-type]


def test_detects_jsonl_first(tmp_path: Path) -> None:
    (tmp_path / ".cub").mkdir()
    (tmp_path / ".cub" / "tasks.jsonl").write_text("")
    (tmp_path / "prd.json").write_text("{}")
    (tmp_path / ".beads").mkdir()
    backend = open_backend(tmp_path, config())
    assert isinstance(backend, JsonlBackend)
    assert backend.describe() == "jsonl .cub/tasks.jsonl"


def test_detects_prd_then_beads(tmp_path: Path) -> None:
    (tmp_path / ".beads").mkdir()
    assert isinstance(open_backend(tmp_path, config()), BeadsBackend)
    (tmp_path / "prd.json").write_text(json.dumps({"tasks": []}))
    assert isinstance(open_backend(tmp_path, config()), PrdBackend)


def test_configured_path(tmp_path: Path) -> None:
    (tmp_path / ".beads").mkdir()
    (tmp_path / ".beads" / "issues.jsonl").write_text("")
    backend = open_backend(tmp_path, config(path=".beads/issues.jsonl"))
    assert isinstance(backend, JsonlBackend) and backend.path == tmp_path / ".beads/issues.jsonl"


def test_nothing_found_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(Rejected) as caught:
        open_backend(tmp_path, config())
    assert caught.value.reason_code == "no_backend"
    message = str(caught.value)
    assert message == (
        f"no task backend found in {tmp_path} (looked for .cub/tasks.jsonl, prd.json, .beads/); "
        "run `cub init` to create one"
    )


def test_explicit_mode_with_missing_file(tmp_path: Path) -> None:
    with pytest.raises(Rejected, match="cub init"):
        open_backend(tmp_path, config(mode="prd"))
    with pytest.raises(Rejected, match=r"no \.beads/"):
        open_backend(tmp_path, config(mode="beads"))
