"""`cub run --verbose`: the journal, printed as it is written."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.support import command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import make_project, read_events, run_cub, task


def test_verbose_prints_each_journal_entry_as_it_is_written(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    agent = write_script(tmp_path / "bin" / "agent", "#!/bin/sh\necho done\n")
    plain = make_project(tmp_path / "plain", [task("t1", "the task")])
    verbose = make_project(tmp_path / "verbose", [task("t1", "the task")])

    quiet = run_cub(["run", *command_harness(agent)], plain)
    loud = run_cub(["run", "--verbose", *command_harness(agent)], verbose)

    assert (quiet.returncode, loud.returncode) == (0, 0), loud.stdout + loud.stderr
    kinds = {e.kind for e in read_events(verbose)}
    assert "agent_started" in kinds
    # The lines `cub runs show --events` gives, in the order of the journal.
    claim = "selecting → executing (start_task)"
    assert claim in loud.stdout
    assert loud.stdout.index("validating → preparing") < loud.stdout.index(claim)
    assert "agent_started" in loud.stdout
    assert claim not in quiet.stdout and "agent_started" not in quiet.stdout
