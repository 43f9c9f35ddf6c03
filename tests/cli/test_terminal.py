"""What `cub run` shows on a real terminal (a pseudo-terminal), and what it does not show when
its output is not one: the live status line, colors, --stream output and the closing summary.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from cub.records.location import runs_dir
from tests.e2e.support import command_harness
from tests.helpers.agents import write_script
from tests.helpers.cli import CUB, cub_env, make_project, read_run, task

pytestmark = pytest.mark.timeout(60)

CLEAR = "\r\x1b[2K"
GREEN = "\x1b[32m"

# "slow*" tasks print their usage and sleep 1.5 s; "talk*" tasks print a line every 0.3 s.
_AGENT = """
import os, sys, time
sys.stdin.read()
TASK = os.environ["CUB_TASK_ID"]
print('{"cub_usage": {"input_tokens": 300, "output_tokens": 20, "cost_usd": 0.03}}', flush=True)
if TASK.startswith("slow"):
    time.sleep(1.5)
elif TASK.startswith("talk"):
    for i in range(5):
        time.sleep(0.3)
        print(f"agent line {i}", flush=True)
"""


def _project(tmp_path: Path, task_id: str) -> tuple[Path, list[str]]:
    project = make_project(tmp_path / "project", [task(task_id, "a task")])
    agent = write_script(tmp_path / "agent", _AGENT)
    return project, ["run", *command_harness(agent)]


def run_on_terminal(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdout_is_terminal: bool = True,
    timeout: float = 30,
) -> tuple[str, str, int]:
    """Run `cub ARGS` with stderr (and stdout, unless told otherwise) on a pseudo-terminal
    200 columns wide. Returns what the terminal received, what stdout's pipe received (empty
    when stdout is the terminal) and the exit code."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(
        [*CUB, *args],
        cwd=cwd,
        env=cub_env({"COLUMNS": "200", "TERM": "xterm", **(env or {})}),
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_is_terminal else subprocess.PIPE,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: every end of the terminal's slave side is closed
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            received += chunk
        piped, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return received.decode("utf-8", "replace"), (piped or b"").decode(), proc.returncode


def render(raw: str) -> list[str]:
    """The lines a terminal shows for ``raw``: a carriage return goes back to the start of the
    line, ESC[2K clears it, later text overwrites earlier text, colors are dropped."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    i = 0
    while i < len(raw):
        escape = re.match(r"\x1b\[([0-9;]*)([A-Za-z])", raw[i:])
        if escape:
            if escape.group(2) == "K":
                line = [] if escape.group(1) == "2" else line[:col]
            i += escape.end()
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            line[col : col + 1] = [ch]
            col += 1
        i += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines


def test_status_line_is_redrawn_in_place_and_leaves_the_summary(tmp_path: Path) -> None:
    project, run = _project(tmp_path, "slow1")
    raw, _, code = run_on_terminal(run, project)
    assert code == 0, raw
    # Redrawn in place, several times over the agent's 1.5 s.
    drawn = re.findall(r"\r\x1b\[2K… slow1 attempt 1 +(\d+)s  (\d+) tokens  \$(\d+\.\d{4})", raw)
    assert len(drawn) >= 2, raw
    assert ("320", "0.0300") in {(tokens, cost) for _, tokens, cost in drawn}
    assert GREEN + "✓" in raw
    screen = render(raw)
    # Cleared before anything else was printed: no trace of it is left on the screen.
    assert not any("attempt 1 " in line for line in screen), screen
    record = read_run(project)
    assert f"cub: completed (exit 0): {record.reason}" in screen
    assert f"  record: {runs_dir(project) / record.run_id}" in screen
    assert any(line.split()[:3] == ["slow1", "#1", "succeeded"] for line in screen), screen
    assert "  usage: 320 tokens, $0.0300" in screen


def test_quiet_shows_no_status_line(tmp_path: Path) -> None:
    project, run = _project(tmp_path, "slow1")
    raw, _, code = run_on_terminal([*run, "--quiet"], project)
    assert code == 0, raw
    assert CLEAR not in raw
    assert "attempt 1" not in raw
    assert "▶" not in raw
    assert read_run(project).state == "completed"


def test_no_status_line_when_stdout_is_a_pipe(tmp_path: Path) -> None:
    project, run = _project(tmp_path, "slow1")
    # stderr is still a terminal: the status line belongs on stdout, which is not.
    raw, piped, code = run_on_terminal(run, project, stdout_is_terminal=False)
    assert code == 0, (raw, piped)
    assert CLEAR not in piped and CLEAR not in raw
    assert "attempt 1" not in piped + raw
    assert "\x1b[" not in piped  # no colors either
    assert "✓ slow1: succeeded" in piped
    assert "cub: completed (exit 0)" in piped
    assert "record: " in piped


def test_no_color_turns_colors_off(tmp_path: Path) -> None:
    project, run = _project(tmp_path, "quick1")
    raw, _, code = run_on_terminal(run, project, env={"NO_COLOR": "1"})
    assert code == 0, raw
    assert any(line.startswith("✓ quick1: succeeded in ") for line in render(raw)), raw
    assert GREEN not in raw
    assert not re.search(r"\x1b\[[0-9;]*m", raw), raw


def test_stream_lines_never_share_a_line_with_the_status(tmp_path: Path) -> None:
    project, run = _project(tmp_path, "talk1")
    raw, _, code = run_on_terminal([*run, "--stream"], project)
    assert code == 0, raw
    assert "attempt 1 " in raw  # the status line was drawn between the agent's lines
    screen = render(raw)
    streamed = [line for line in screen if "│" in line]
    assert streamed == [
        '  │ {"cub_usage": {"input_tokens": 300, "output_tokens": 20, "cost_usd": 0.03}}',
        *(f"  │ agent line {i}" for i in range(5)),
    ]
    for line in streamed:
        assert "attempt 1 " not in line
    # In what was sent, too: every agent line starts on a cleared line, never after the status.
    for sent in raw.split("\n"):
        if "│" in sent:
            assert "attempt 1 " not in sent.rsplit(CLEAR, 1)[-1], repr(sent)
    assert not any("attempt 1 " in line for line in screen)
