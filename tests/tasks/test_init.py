from __future__ import annotations

import json
from pathlib import Path

from cub.config.load import load_config
from cub.config.schema import Config
from cub.scaffold import RUNLOOP_TEMPLATE, init_project
from cub.workspace.root import find_project_root
from tests.helpers.cli import run_cub
from tests.helpers.git import make_repo


def test_init_creates_everything(tmp_path: Path) -> None:
    created = init_project(tmp_path)
    assert ".cub/" in created and ".cub/config.json" in created and ".cub/tasks.jsonl" in created
    assert (tmp_path / ".cub" / "tasks.jsonl").read_text() == ""
    assert json.loads((tmp_path / ".cub" / "config.json").read_text())["loop"]["grace"] == "10s"
    assert load_config(tmp_path, env={"HOME": str(tmp_path / "h")}).config == Config()
    ignore = (tmp_path / ".gitignore").read_text().splitlines()
    assert ignore == [".cub/worktrees/"]  # records and locks are not kept in the tree
    assert RUNLOOP_TEMPLATE.is_file()
    assert (tmp_path / ".cub" / "runloop.md").read_bytes() == RUNLOOP_TEMPLATE.read_bytes()
    assert ".cub/runloop.md" in created


def test_init_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules\n/.cub/runs")  # no final newline
    init_project(tmp_path)
    (tmp_path / ".cub" / "config.json").write_text('{"loop": {"max_attempts": 9}}')
    (tmp_path / ".cub" / "tasks.jsonl").write_text('{"id": "a", "title": "A"}\n')
    assert init_project(tmp_path) == []
    assert (tmp_path / ".cub" / "config.json").read_text() == '{"loop": {"max_attempts": 9}}'
    assert (tmp_path / ".cub" / "tasks.jsonl").read_text() == '{"id": "a", "title": "A"}\n'
    assert (tmp_path / ".gitignore").read_text().splitlines() == [
        "node_modules",
        "/.cub/runs",
        ".cub/worktrees/",
    ]


def test_find_project_root(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    deep = repo / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == repo
    (repo / "src" / ".cub").mkdir()
    assert find_project_root(deep) == repo / "src"
    assert find_project_root(tmp_path) is None


def test_init_command(tmp_path: Path) -> None:
    first = run_cub(["init", "--project-dir", str(tmp_path)], tmp_path)
    assert "Traceback" not in first.stderr and first.returncode == 0, first.stderr
    assert "created .cub/config.json" in first.stdout + first.stderr
    # It ends with what to do next, and each command it suggests works there.
    suggested = [
        line.split("#")[0].strip() for line in first.stdout.split("next steps:")[1].splitlines()
    ]
    suggested = [line for line in suggested if line.startswith("cub ")]
    assert [c.split()[1] for c in suggested] == ["tasks", "run", "run", "status"]
    make_repo(tmp_path)
    added = run_cub(["tasks", "add", "Fix the flaky login test", "--priority", "1"], tmp_path)
    assert added.returncode == 0, added.stderr
    dry = run_cub(["run", "--ready"], tmp_path)
    assert dry.returncode == 0 and "Fix the flaky login test" in dry.stdout
    again = run_cub(["init", "--project-dir", str(tmp_path)], tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout + again.stderr
