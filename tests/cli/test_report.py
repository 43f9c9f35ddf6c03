"""`cub runs report`: the page is checked in headless Chromium, as a person would open it.

For a completed, a failed, an interrupted, a recovered (runner_died) and a parallel run (the
sandboxed one is in tests/sandbox/): the path highlighted in the state chart is run.json's
history, there is one bar per recorded attempt, every task has its section with working links,
and a screenshot of each page is kept in the test's directory.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.support import command_harness
from tests.helpers.agents import wait_for_file, write_script
from tests.helpers.browser import check_report_page, chromium_or_reason, dom_of
from tests.helpers.cli import make_project, read_run, run_cub, run_dir, start_cub, task

pytestmark = pytest.mark.timeout(180)

AGENT = """
import os, subprocess, sys, time
task = os.environ["CUB_TASK_ID"]
print("working on", task, "<b>not markup</b>")
if task.startswith("fail"):
    sys.exit(3)
if task.startswith("slow"):
    open(os.environ["AGENT_READY"], "w").close()
    time.sleep(60)
open(task + ".txt", "w").write("x\\n")
subprocess.run(["git", "add", task + ".txt"], check=True)
subprocess.run(["git", "commit", "-qm", "work on " + task], check=True)
print('{"cub_usage": {"input_tokens": 100, "output_tokens": 20}}')
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[str]:
    found, problem = chromium_or_reason()
    if found is None:
        pytest.skip(problem or "no chromium")
    yield found


def _report(project: Path, run_id: str = "newest") -> Path:
    directory = run_dir(project, run_id)
    result = run_cub(["runs", "report", directory.name], project)
    assert result.returncode == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page == directory / "report.html"
    return page


def _project(tmp_path: Path, *ids: str) -> tuple[Path, list[str]]:
    project = make_project(tmp_path / "p", [task(i) for i in ids])
    agent = write_script(tmp_path / "agent.py", AGENT)
    return project, command_harness(f"{sys.executable} {agent}")


def test_report_of_a_completed_and_a_failed_run(browser: str, tmp_path: Path) -> None:
    project, harness = _project(tmp_path, "t1", "t2", "fail1")
    done = run_cub(["run", "--task", "t1", *harness], project)
    assert done.returncode == 0, done.stderr
    check_report_page(browser, _report(project), tmp_path)
    failed = run_cub(["run", "--on-failure", "retry", *harness], project)
    assert failed.returncode == 1, failed.stderr
    page = _report(project)
    check_report_page(browser, page, tmp_path)
    assert read_run(project).state == "failed"
    assert "work on t2" in page.read_text()  # the task's commit, hash and subject


@pytest.mark.parametrize("how", ["interrupted", "recovered"])
def test_report_of_a_run_that_was_stopped(browser: str, tmp_path: Path, how: str) -> None:
    project, harness = _project(tmp_path, "t1", "slow1")
    ready = tmp_path / "ready"
    proc = start_cub(["run", *harness], project, env={"AGENT_READY": str(ready)})
    try:
        wait_for_file(ready, timeout=30)
        proc.send_signal(signal.SIGINT if how == "interrupted" else signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    page = _report(project)  # the report's own command recovers a dead run first
    record = read_run(project)
    expected = ("interrupted", None) if how == "interrupted" else ("force_killed", "runner_died")
    assert (record.state, record.reason_code if how == "recovered" else None) == expected
    check_report_page(browser, page, tmp_path)


def test_report_of_a_parallel_run_links_its_children(browser: str, tmp_path: Path) -> None:
    project, harness = _project(tmp_path, "t1", "t2", "t3")
    result = run_cub(["run", "--parallel", "2", "--name", "par", *harness], project)
    assert result.returncode == 0, result.stdout + result.stderr
    page = _report(project, "par")
    check_report_page(browser, page, tmp_path)
    children = [e.attrs["data-child"] for e in dom_of(browser, page) if "data-child" in e.attrs]
    assert sorted(children) == ["par-t1", "par-t2", "par-t3"]
    for child in children:
        check_report_page(browser, page.parent.parent / child / "report.html", tmp_path)
    index = run_cub(["runs", "report", "--index"], project)
    assert index.returncode == 0, index.stderr
    rows = [
        e.attrs["data-run"]
        for e in dom_of(browser, Path(index.stdout.strip()))
        if "data-run" in e.attrs
    ]
    assert set(rows) >= {"par", "par-t1", "par-t2", "par-t3"}
