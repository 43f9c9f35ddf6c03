from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cub.chart.audit import exit_paths_markdown
from cub.chart.definition import RUN_CHART

REPO = Path(__file__).resolve().parents[2]
EXPORT = REPO / "tools" / "export_statecharts.py"
AUDIT = REPO / "tools" / "audit_exits.py"


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_a_fresh_export_is_up_to_date(tmp_path: Path) -> None:
    charts = tmp_path / "statecharts"
    exported = run(EXPORT, "--dir", charts)
    assert exported.returncode == 0, exported.stderr
    assert {p.name for p in charts.iterdir()} >= {"run.mmd", "run.dot", "exit-paths.md"}
    checked = run(EXPORT, "--check", "--dir", charts)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1] == "statecharts are up to date"


def test_a_modified_file_fails_the_check_and_names_it(tmp_path: Path) -> None:
    charts = tmp_path / "statecharts"
    run(EXPORT, "--dir", charts)
    before = {p.name: p.read_bytes() for p in charts.iterdir()}
    mmd = charts / "run.mmd"
    mmd.write_text(mmd.read_text().replace("validate", "validated"))
    checked = run(EXPORT, "--check", "--dir", charts)
    assert checked.returncode == 1
    last = checked.stdout.splitlines()[-1]
    assert last == f"{mmd} differs from the code; run tools/export_statecharts.py"
    # --check writes nothing.
    assert mmd.read_text() != before["run.mmd"].decode()
    assert run(EXPORT, "--dir", charts).returncode == 0
    assert run(EXPORT, "--check", "--dir", charts).returncode == 0


def test_a_missing_file_fails_the_check(tmp_path: Path) -> None:
    charts = tmp_path / "statecharts"
    run(EXPORT, "--dir", charts)
    (charts / "exit-paths.md").unlink()
    checked = run(EXPORT, "--check", "--dir", charts)
    assert checked.returncode == 1
    assert "exit-paths.md differs from the code" in checked.stdout


def test_the_committed_statecharts_match_the_code(tmp_path: Path) -> None:
    checked = run(EXPORT, "--check")
    assert checked.returncode == 0, checked.stdout


def test_the_tool_runs_from_another_directory(tmp_path: Path) -> None:
    charts = tmp_path / "out"
    assert run(EXPORT, "--dir", charts, cwd=tmp_path).returncode == 0
    assert (charts / "run.mmd").is_file()


def test_the_exit_audit_tool_passes_on_a_clean_tree_and_fails_on_a_dirty_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "cub").mkdir()
    (tmp_path / "cub" / "ok.py").write_text("def f():\n    return 1\n")
    clean = run(AUDIT, "--root", tmp_path)
    assert clean.returncode == 0
    assert clean.stdout.splitlines()[-1] == "no process exits outside cub/cli/main.py:main"
    (tmp_path / "cub" / "bad.py").write_text("import sys\nsys.exit(2)\n")
    dirty = run(AUDIT, "--root", tmp_path)
    assert dirty.returncode == 1
    assert "cub/bad.py:2: sys.exit(2)" in dirty.stdout


def test_the_exit_audit_tool_can_write_the_exit_paths(tmp_path: Path) -> None:
    (tmp_path / "cub").mkdir()
    assert run(AUDIT, "--write", "--root", tmp_path).returncode == 0
    written = (tmp_path / "statecharts" / "exit-paths.md").read_text(encoding="utf-8")
    assert written == exit_paths_markdown(RUN_CHART, {})  # no tests/ there: no scenarios
