from __future__ import annotations

import textwrap
from pathlib import Path

from cub.chart.audit import (
    NO_RECORD_CODES,
    SEED_GAPS,
    exit_paths_markdown,
    exit_rows,
    find_process_exits,
    find_scenarios,
    row_key,
)
from cub.chart.definition import RUN_CHART
from cub.chart.exit_codes import exit_code_for

REPO = Path(__file__).resolve().parents[2]


def table_rows(markdown: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("| `")
    ]


SCENARIOS = find_scenarios(REPO)


def audit() -> str:
    return exit_paths_markdown(RUN_CHART, SCENARIOS)


def test_every_row_has_a_scenario_and_every_scenario_a_row() -> None:
    """CI fails when a way to end a run has no scenario driving the real process into it, or a
    scenario names a row the chart does not have (a stale or mistyped key)."""
    rows = {row_key(row) for row in exit_rows(RUN_CHART)}
    missing = sorted(rows - SCENARIOS.keys(), key=str)
    unknown = sorted(SCENARIOS.keys() - rows, key=str)
    assert not missing, "rows with no @exit_path scenario:\n" + "\n".join(map(str, missing))
    assert not unknown, "scenarios of rows the chart lacks:\n" + "\n".join(map(str, unknown))


def test_every_row_names_its_scenario_and_the_files_it_checks() -> None:
    text = audit()
    rows = {(r[0], r[1], r[2], r[3]): r for r in table_rows(text)}
    for row in exit_rows(RUN_CHART):
        edge, code = row.edge, row.reason_code
        line = rows[(f"`{edge.trigger}`", edge.source, f"**{edge.dest}**", f"`{code}`")]
        assert line[4] == str(exit_code_for(edge.dest, code))
        tests = SCENARIOS.get(row_key(row), [])
        if tests:
            assert line[6].startswith("✅") and all(t in line[6] for t in tests)
        else:
            assert line[6] == "❌ no scenario"
        if code in NO_RECORD_CODES:
            assert "run.json" not in line[5] and "stderr" in line[5]
        else:
            assert all(f in line[5] for f in ("run.json", "status.json", "events.jsonl"))
    proven = sum(1 for row in exit_rows(RUN_CHART) if SCENARIOS.get(row_key(row)))
    assert f"{len(rows)} ways to end a run; {proven} proved by a scenario" in text


def test_scenarios_are_found_by_their_mark_and_skipped_ones_are_not(tmp_path: Path) -> None:
    tests = tmp_path / "tests" / "e2e"
    tests.mkdir(parents=True)
    (tests / "test_x.py").write_text(
        textwrap.dedent(
            """\
            import pytest
            from tests.helpers.exit_paths import exit_path

            @exit_path("finish", "selecting", "all_tasks_done")
            def test_done(): ...

            @pytest.mark.exit_path("stopped", "stopping", "sigint")
            def test_sigint(): ...

            @pytest.mark.skip
            @exit_path("crash", "created", "exception")
            def test_skipped(): ...

            class TestGroup:
                @exit_path("listed", "preparing", "dry_run")
                def test_listed(self): ...

            @exit_path("reject", "created", "usage_error")
            def helper_not_collected(): ...
            """
        )
    )
    (tests / "helper.py").write_text(
        '@exit_path("reject", "validating", "flag_conflict")\ndef test_not_in_a_test_file(): ...\n'
    )
    assert find_scenarios(tmp_path) == {
        ("finish", "selecting", "all_tasks_done"): ["tests/e2e/test_x.py::test_done"],
        ("stopped", "stopping", "sigint"): ["tests/e2e/test_x.py::test_sigint"],
        ("listed", "preparing", "dry_run"): ["tests/e2e/test_x.py::TestGroup::test_listed"],
    }


def test_rows_that_cannot_happen_are_not_in_the_chart() -> None:
    keys = {row_key(row) for row in exit_rows(RUN_CHART)}
    assert not any(code == "harness_failed" for _, _, code in keys)
    assert {s for t, s, code in keys if code == "grace_expired"} == {"stopping"}


def test_exit_codes_follow_the_spec() -> None:
    rows = {(r[0], r[3]): r[4] for r in table_rows(audit())}
    assert rows[("`stopped`", "`sigint`")] == "130"
    assert rows[("`stopped`", "`sigterm`")] == "143"
    assert rows[("`stopped`", "`sighup`")] == "143"
    assert rows[("`force_kill`", "`second_interrupt`")] == "137"
    assert rows[("`reject`", "`flag_conflict`")] == "2"


def test_attempt_records_are_listed_only_where_an_attempt_may_be_in_flight() -> None:
    rows = table_rows(audit())
    assert rows
    # Leave `executing` before the agent starts: a fail-fast pre-task hook, a second interrupt
    # (only a pre-task hook can still be running then), the task file re-read for the prompt.
    before_agent = {
        ("`hook_failed`", "`hook_failed`"),
        ("`force_kill`", "`second_interrupt`"),
        ("`backlog_changed`", "`task_file_changed`"),
    }
    for row in rows:
        in_flight = row[1] in {"executing", "settling", "stopping"} and not (
            row[1] == "executing" and (row[0], row[3]) in before_agent
        )
        assert ("task.json" in row[5]) == in_flight, row


def test_every_seed_gap_points_at_rows_that_exist() -> None:
    real = {(row.edge.trigger, row.reason_code) for row in exit_rows(RUN_CHART)}
    text = audit()
    for gap in SEED_GAPS:
        assert gap.gap in text
        for pair in gap.rows:
            assert pair in real, f"{gap.gap} cites {pair}, which the chart does not have"


def test_the_committed_audit_says_it_is_generated() -> None:
    text = audit()
    assert "tools/export_statecharts.py" in text
    assert "cub/chart/definition.py" in text
    assert "on_enter_terminal" in text


FORBIDDEN = """\
import os
import sys
import click
import click.exceptions
from click.exceptions import Abort, Exit
from sys import exit as leave


def helper(ctx):
    sys.exit(1)
    os._exit(2)
    os.abort()
    exit(3)
    quit()
    raise SystemExit(4)
    raise SystemExit
    raise click.exceptions.Exit(5)
    raise click.exceptions.Abort()
    raise click.Abort()
    raise Exit(6)
    raise Abort
    ctx.exit(7)
    ctx.abort()
    click.get_current_context().exit(8)
    leave(9)
"""

ALLOWED = """\
import os
import sys

import click


def helper(ctx):
    ctx.fail("bad flag")
    print("exit")
    os.path.exists("x")
    raise click.UsageError("no")


def main():
    def nested():
        sys.exit(3)

    sys.exit(0)
"""


def write(root: Path, rel: str, source: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def test_every_forbidden_form_is_reported_with_its_line(tmp_path: Path) -> None:
    write(tmp_path, "cub/run/driver.py", FORBIDDEN)
    findings = find_process_exits(tmp_path)
    lines = FORBIDDEN.splitlines()
    expected = [f"cub/run/driver.py:{n}: {lines[n - 1].strip()}" for n in range(10, len(lines) + 1)]
    assert findings == expected


def test_sys_exit_is_allowed_only_in_main_of_the_cli(tmp_path: Path) -> None:
    write(tmp_path, "cub/cli/main.py", ALLOWED)
    assert find_process_exits(tmp_path) == []
    write(tmp_path, "cub/cli/other.py", ALLOWED)
    assert find_process_exits(tmp_path) == [
        "cub/cli/other.py:16: sys.exit(3)",
        "cub/cli/other.py:18: sys.exit(0)",
    ]


def test_a_main_elsewhere_in_the_cli_module_is_not_allowed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cub/cli/main.py",
        """\
        import sys


        class Runner:
            def main(self):
                sys.exit(1)


        def helper():
            raise SystemExit(2)
        """,
    )
    assert find_process_exits(tmp_path) == [
        "cub/cli/main.py:6: sys.exit(1)",
        "cub/cli/main.py:10: raise SystemExit(2)",
    ]


def test_a_file_that_does_not_parse_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "cub/broken.py", "def oops(:\n")
    [finding] = find_process_exits(tmp_path)
    assert finding.startswith("cub/broken.py:1: cannot be audited")


def test_a_tree_without_cub_reports_nothing(tmp_path: Path) -> None:
    assert find_process_exits(tmp_path) == []


def test_the_real_package_exits_only_from_the_cli_main() -> None:
    assert find_process_exits(REPO) == []
