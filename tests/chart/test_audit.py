from __future__ import annotations

import textwrap
from pathlib import Path

from cub.chart.audit import SEED_GAPS, exit_paths_markdown, exit_rows, find_process_exits
from cub.chart.definition import RUN_CHART, VALIDATION_REJECTED
from cub.run.exit_codes import exit_code_for

REPO = Path(__file__).resolve().parents[2]


def table_rows(markdown: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("| `")
    ]


def test_every_way_into_a_terminal_state_has_a_persisted_row() -> None:
    text = exit_paths_markdown(RUN_CHART)
    rows = {(r[0], r[1], r[2], r[3]): r for r in table_rows(text)}
    expected = [
        (edge, code)
        for edge in RUN_CHART.edges
        if RUN_CHART.is_terminal(edge.dest)
        for code in edge.reason_codes
    ]
    assert len(expected) == len(exit_rows(RUN_CHART))
    for edge, code in expected:
        row = rows[(f"`{edge.trigger}`", edge.source, f"**{edge.dest}**", f"`{code}`")]
        assert row[4] == str(exit_code_for(edge.dest, code))
        assert row[6] == "✅"
        assert "run.json" in row[5] and "events.jsonl" in row[5]
        assert ("status.json" in row[5]) == (edge.dest != VALIDATION_REJECTED)
    assert f"**{len(expected)} ways to end a run; {len(expected)} persisted (100%).**" in text


def test_exit_codes_follow_the_spec() -> None:
    rows = {(r[0], r[3]): r[4] for r in table_rows(exit_paths_markdown(RUN_CHART))}
    assert rows[("`stopped`", "`sigint`")] == "130"
    assert rows[("`stopped`", "`sigterm`")] == "143"
    assert rows[("`stopped`", "`sighup`")] == "143"
    assert rows[("`force_kill`", "`second_interrupt`")] == "137"
    assert rows[("`reject`", "`flag_conflict`")] == "2"


def test_attempt_records_are_listed_only_where_an_attempt_may_be_in_flight() -> None:
    rows = table_rows(exit_paths_markdown(RUN_CHART))
    assert rows
    for row in rows:
        in_flight = row[1] in {"executing", "settling", "stopping"}
        assert ("task.json" in row[5]) == in_flight, row


def test_every_seed_gap_points_at_rows_that_exist() -> None:
    real = {(row.edge.trigger, row.reason_code) for row in exit_rows(RUN_CHART)}
    text = exit_paths_markdown(RUN_CHART)
    for gap in SEED_GAPS:
        assert gap.gap in text
        for pair in gap.rows:
            assert pair in real, f"{gap.gap} cites {pair}, which the chart does not have"


def test_the_committed_audit_says_it_is_generated() -> None:
    text = exit_paths_markdown(RUN_CHART)
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
