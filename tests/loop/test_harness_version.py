"""`AGENT --version` is asked once per run and its first line recorded; a program that prints
without end, or never exits, costs the run a few kilobytes and at most the timeout."""

from __future__ import annotations

import sys
from pathlib import Path

from cub.agents.registry import HarnessChoice
from cub.loop.prepare import harness_version


def program(tmp_path: Path, body: str) -> str:
    path = tmp_path / "claude"
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_the_first_line_of_the_version_is_kept(tmp_path: Path) -> None:
    agent = program(tmp_path, 'print("2.0.1 (Claude Code)")\nprint("more")')
    assert harness_version(HarnessChoice("claude", agent)) == "2.0.1 (Claude Code)"


def test_a_version_that_never_ends_is_cut_short_and_not_kept(tmp_path: Path) -> None:
    endless = program(
        tmp_path, 'line = b"v" * 99 + b"\\n"\nwhile True: sys.stdout.buffer.write(line)'
    )
    assert harness_version(HarnessChoice("claude", endless)) is None


def test_a_failing_version_is_not_kept(tmp_path: Path) -> None:
    failing = program(tmp_path, 'print("unknown option --version")\nsys.exit(2)')
    assert harness_version(HarnessChoice("claude", failing)) is None
