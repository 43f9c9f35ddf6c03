"""`cub runs list|show|tail|prune` and `cub status`, against runs the real `cub run` recorded
in real git repositories with scripted agents (`--harness command`).

The finished runs (completed, failed on a stuck task, completed after a retry) are recorded once
per module; tests that change records work on a copy. Live runs use an agent that waits for a
release file, so a test decides when its run ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from cub.records.location import runs_dir
from cub.records.reader import RunSummary
from cub.records.schemas import RunRecord, StatusRecord
from tests.e2e.support import assert_one_line_error, command_harness
from tests.helpers.agents import is_alive, wait_for_file, wait_until, write_script
from tests.helpers.cli import (
    all_runs,
    make_project,
    read_events,
    read_run,
    read_tasks,
    run_cub,
    run_dir,
    start_cub,
    task,
)
from tests.helpers.env import isolate_environment

pytestmark = pytest.mark.timeout(60)

# What the agent does is chosen by the task id's prefix.
_AGENT = """
import os, sys, time
from pathlib import Path
sys.stdin.read()
TASK = os.environ["CUB_TASK_ID"]
STATE = Path({state!r})

def say(line):
    print(line, flush=True)

def usage(inp, out, cost=None):
    fields = {{"input_tokens": inp, "output_tokens": out}}
    if cost is not None:
        fields["cost_usd"] = cost
    say('{{"cub_usage": ' + repr(fields).replace("'", '"') + "}}")

def mark(name, text=""):
    tmp = STATE / (name + ".tmp")
    tmp.write_text(text)
    tmp.rename(STATE / name)

if TASK.startswith("ok"):
    usage(100, 50, 0.01)
    say("all done")
elif TASK.startswith("stuck"):
    usage(40, 10, 0.002)
    say("<stuck>the spec contradicts itself</stuck>")
elif TASK.startswith("flaky"):
    usage(120, 30, 0.01)
    if not (STATE / (TASK + ".failed")).exists():
        mark(TASK + ".failed")
        say("first try fails")
        sys.exit(1)
    say("second try works")
elif TASK.startswith("tick"):
    # Output spread over ~2 s (~1 s per attempt of a "tickretry" task, whose first fails).
    retry = TASK.startswith("tickretry") and not (STATE / (TASK + ".failed")).exists()
    for i in range(5 if TASK.startswith("tickretry") else 10):
        say(f"{{'first' if retry else 'line'}} {{i}} of {{TASK}}")
        time.sleep(0.2)
    if retry:
        mark(TASK + ".failed")
        sys.exit(1)
elif TASK.startswith("sleep"):
    usage(200, 50)
    say("sleeping until released")
    mark(TASK + ".pid", str(os.getpid()))
    deadline = time.monotonic() + 40
    while not (STATE / (TASK + ".release")).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
else:
    sys.exit(1)
"""

TASKS = [task("ok1"), task("stuck1"), task("flaky1"), task("sleep1"), task("tick1")]


def make_agent(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    return write_script(bin_dir / "agent", _AGENT.format(state=str(bin_dir)))


def cub(args: list[str], project: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = run_cub(args, project)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def rows(listing: str) -> dict[str, list[str]]:
    """`cub runs list` lines by run id: id, mode, state, exit, ok/fail, tokens, cost, time,
    started (date, time) and the reason."""
    lines = listing.splitlines()
    assert lines[0].split()[:4] == ["RUN", "MODE", "STATE", "EXIT"], lines[0]
    found = {}
    for line in lines[1:]:
        fields = line.split(maxsplit=10)
        found[fields[0]] = fields
    return found


def listed_ids(listing: str) -> list[str]:
    return [line.split()[0] for line in listing.splitlines()[1:]]


def summaries(project: Path, *args: str) -> list[RunSummary]:
    out = cub(["runs", "list", "--json", *args], project).stdout
    return msgspec.json.decode(out, type=list[RunSummary])


def set_started(project: Path, run_id: str, when: datetime) -> None:
    """Rewrite a run's start time in run.json and status.json, as if it ran back then."""
    for name in ("run.json", "status.json"):
        path = run_dir(project, run_id) / name
        if path.exists():
            data = json.loads(path.read_text())
            data["started_at"] = when.isoformat(timespec="milliseconds")
            path.write_text(json.dumps(data))


def latest_target(project: Path) -> str:
    return os.readlink(runs_dir(project) / "latest")


def copy_project(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    return dest


class LiveRun:
    """A `cub run` whose agent (task ``sleep*``) sleeps until released."""

    def __init__(self, project: Path, bin_dir: Path, task_id: str, *extra: str) -> None:
        self.bin_dir, self.task_id = bin_dir, task_id
        self.proc = start_cub(
            ["run", *command_harness(make_agent(bin_dir)), "--task", task_id, *extra], project
        )
        try:
            self.agent_pid = int(wait_for_file(bin_dir / f"{task_id}.pid", timeout=20))
        except BaseException:
            self.kill()
            raise
        self.run_dir = run_dir(project)

    def status(self) -> StatusRecord:
        return msgspec.json.decode((self.run_dir / "status.json").read_bytes(), type=StatusRecord)

    def finish(self) -> subprocess.CompletedProcess[str]:
        (self.bin_dir / f"{self.task_id}.release").touch()
        out, err = self.proc.communicate(timeout=30)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the autouse `isolated_home` fixture does, for module-scoped fixtures."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        isolate_environment(home, mp)
        yield


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project with three finished runs, oldest first: r1-ok (completed), r2-stuck (failed,
    the agent got stuck), r3-retry (completed on the second attempt, with a token budget)."""
    root = tmp_path_factory.mktemp("recorded")
    with isolated_env(tmp_path_factory):
        project = make_project(root / "project", TASKS)
        agent = command_harness(make_agent(root / "bin"))
        cub(["run", *agent, "--task", "ok1", "--name", "r1-ok"], project)
        cub(["run", *agent, "--task", "stuck1", "--name", "r2-stuck"], project, code=1)
        cub(
            [
                "run",
                *agent,
                "--task",
                "flaky1",
                "--name",
                "r3-retry",
                "--on-failure",
                "retry",
                "--budget-tokens",
                "1000",
            ],
            project,
        )
        yield project


@pytest.fixture
def project(recorded: Path, tmp_path: Path) -> Path:
    """A copy of the recorded project that a test may change."""
    return copy_project(recorded, tmp_path / "project")


# ------------------------------------------------------------------------------- the runs


def test_recorded_runs_are_what_the_tests_expect(recorded: Path) -> None:
    runs = {r.run_id: r for r in all_runs(recorded)}
    assert {k: (r.state, r.reason_code) for k, r in runs.items()} == {
        "r1-ok": ("completed", "task_done"),
        "r2-stuck": ("failed", "agent_stuck"),
        "r3-retry": ("completed", "task_done"),
    }
    assert (
        run_dir(recorded, "r3-retry") / "tasks" / "flaky1" / "attempt-1" / "task.json"
    ).is_file()
    assert runs["r1-ok"].budget.tokens_used == 150
    assert runs["r3-retry"].budget.tokens_used == 300


# ---------------------------------------------------------------------------- runs list


def test_list_shows_one_line_per_run_newest_first(recorded: Path) -> None:
    result = cub(["runs", "list"], recorded)
    assert listed_ids(result.stdout) == ["r3-retry", "r2-stuck", "r1-ok"]
    header = result.stdout.splitlines()[0].split()
    assert header == [
        "RUN",
        "MODE",
        "STATE",
        "EXIT",
        "OK/FAIL",
        "TOKENS",
        "COST",
        "TIME",
        "STARTED",
        "REASON",
    ]
    listed = rows(result.stdout)
    for record in all_runs(recorded):
        fields = listed[record.run_id]
        assert fields[1:7] == [
            record.mode,
            record.state,
            str(record.exit_code),
            f"{record.tasks.succeeded}/{record.tasks.failed}",
            str(record.budget.tokens_used),
            f"{record.budget.cost_usd:.4f}",
        ]
        assert re.fullmatch(r"\d+(\.\d)?s|\d+(ms|m\d+s|m)", fields[7]), fields[7]
        assert f"{fields[8]}T{fields[9]}" == record.started_at[:19]
        assert fields[10] == record.reason
    assert listed["r2-stuck"][2:5] == ["failed", "1", "0/1"]
    assert listed["r3-retry"][2:6] == ["completed", "0", "1/0", "300"]
    assert listed["r1-ok"][6] == "0.0100"


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_list_fits_the_terminal_width(recorded: Path, columns: int) -> None:
    result = run_cub(["runs", "list"], recorded, env={"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # the header and three runs
    assert max(len(line) for line in lines) <= max(columns, 80), lines
    for line in lines[1:]:
        assert line.split()[0] in ("r1-ok", "r2-stuck", "r3-retry")
    wide = run_cub(["runs", "list"], recorded, env={"COLUMNS": "200"}).stdout.splitlines()
    assert "MODE" in wide[0] and "COST" in wide[0]
    assert "MODE" not in lines[0]  # the first column given up for the reason


def test_list_json_decodes_into_run_summaries(recorded: Path) -> None:
    found = summaries(recorded)
    assert [s.run_id for s in found] == ["r3-retry", "r2-stuck", "r1-ok"]
    assert [s.state for s in found] == ["completed", "failed", "completed"]
    assert [s.exit_code for s in found] == [0, 1, 0]
    assert not any(s.live for s in found)
    records = {r.run_id: r for r in all_runs(recorded)}
    for summary in found:
        record = records[summary.run_id]
        assert (summary.mode, summary.reason_code, summary.started_at, summary.ended_at) == (
            record.mode,
            record.reason_code,
            record.started_at,
            record.ended_at,
        )
        assert summary.budget == record.budget
        assert summary.tasks == record.tasks


def test_list_filters_by_state_start_time_and_count(project: Path) -> None:
    failed = cub(["runs", "list", "--state", "failed"], project).stdout
    assert listed_ids(failed) == ["r2-stuck"]
    assert [s.run_id for s in summaries(project, "--state", "completed")] == ["r3-retry", "r1-ok"]
    assert listed_ids(cub(["runs", "list", "--since", "1h"], project).stdout) == [
        "r3-retry",
        "r2-stuck",
        "r1-ok",
    ]
    limited = cub(["runs", "list", "--limit", "1"], project).stdout.splitlines()
    assert len(limited) == 2 and limited[1].startswith("r3-retry ")

    set_started(project, "r1-ok", datetime.now(UTC) - timedelta(days=3))
    assert listed_ids(cub(["runs", "list", "--since", "1d"], project).stdout) == [
        "r3-retry",
        "r2-stuck",
    ]
    assert [s.run_id for s in summaries(project, "--since", "4d")][-1] == "r1-ok"
    # Filters combine, and an empty result is not an error.
    assert summaries(project, "--since", "1d", "--state", "interrupted") == []
    empty = cub(["runs", "list", "--state", "interrupted"], project)
    assert (empty.stdout, empty.stderr) == ("", "no runs match\n")
    bad = run_cub(["runs", "list", "--since", "soon"], project)
    assert bad.returncode == 2 and "Invalid value for --since" in bad.stderr, bad.stderr


# ---------------------------------------------------------------------------- runs show


def test_show_latest_prints_ending_timeline_attempts_and_budget(recorded: Path) -> None:
    out = cub(["runs", "show", "latest"], recorded).stdout
    record = read_run(recorded, "r3-retry")
    assert out.startswith("run       r3-retry  (run)")
    assert "state     completed  exit 0" in out
    assert f"reason    {record.reason}  [task_done]" in out
    # Every transition of the run, in order, as its journal has them.
    lines = out.splitlines()
    start = lines.index("timeline") + 1
    timeline = lines[start : start + len(record.history)]
    transitions = [e for e in read_events(recorded, "r3-retry") if e.kind == "transition"]
    assert len(record.history) == len(transitions)
    for line, step, event in zip(timeline, record.history, transitions, strict=True):
        assert line.split() == [step.at[11:23], step.from_, "→", step.to, step.trigger]
        assert (event.state_from, event.state_to) == (step.from_, step.to)
    assert not lines[start + len(record.history)].startswith("  ")
    # Both attempts, the earlier one under attempt-1/, with outcome, usage and log.
    attempts_at = lines.index("attempts")
    first, first_log, second, second_log = lines[attempts_at + 1 : attempts_at + 5]
    assert first.split()[:3] == ["flaky1", "#1", "failed"]
    assert "150 tokens  $0.0100" in first
    assert "code 1" in first  # why it failed
    assert first_log.strip() == str(
        run_dir(recorded, "r3-retry") / "tasks/flaky1/attempt-1/harness.log"
    )
    assert Path(first_log.strip()).read_text().count("first try fails") == 1
    assert second.split()[:3] == ["flaky1", "#2", "succeeded"]
    assert second_log.strip() == str(run_dir(recorded, "r3-retry") / "tasks/flaky1/harness.log")
    # Budget use: 300 of the 1000 tokens allowed.
    assert "usage     300 tokens, $0.0200, 2 iteration(s), tokens 30% of 1000" in out
    assert "tasks     1 succeeded, 0 failed" in out


def test_show_a_stuck_run_by_id(recorded: Path) -> None:
    out = cub(["runs", "show", "r2-stuck"], recorded).stdout
    assert "state     failed  exit 1" in out
    assert "[agent_stuck]" in out
    assert "the spec contradicts itself" in out
    attempt = next(line for line in out.splitlines() if line.startswith("  stuck1 #1"))
    assert attempt.split()[2] == "stuck"
    assert "50 tokens" in attempt


def test_show_json_is_the_run_record(recorded: Path) -> None:
    out = cub(["runs", "show", "r2-stuck", "--json"], recorded).stdout
    assert msgspec.json.decode(out, type=RunRecord) == read_run(recorded, "r2-stuck")
    latest = cub(["runs", "show", "--json"], recorded).stdout
    assert msgspec.json.decode(latest, type=RunRecord).run_id == "r3-retry"


def test_show_events_prints_every_journal_line(recorded: Path) -> None:
    out = cub(["runs", "show", "r1-ok", "--events"], recorded).stdout
    lines = out.splitlines()
    journal = lines[lines.index("events") + 1 :]
    events = read_events(recorded, "r1-ok")
    assert (
        len(journal)
        == len(events)
        == len((run_dir(recorded, "r1-ok") / "events.jsonl").read_text().splitlines())
    )
    for line, event in zip(journal, events, strict=True):
        seq, at, *rest = line.split()
        assert (int(seq), at) == (event.seq, event.at[11:23])
        if event.kind == "transition":
            assert rest[:3] == [event.state_from, "→", event.state_to]
        else:
            assert rest[0] == event.kind
    assert any("agent_started [ok1]" in line for line in journal)


def test_show_unknown_run_is_a_one_line_error(recorded: Path) -> None:
    result = run_cub(["runs", "show", "nosuch"], recorded)
    assert_one_line_error(result, "nosuch", code=1)
    assert result.stdout == ""
    assert_one_line_error(run_cub(["runs", "show", "../r1-ok"], recorded), "r1-ok", code=1)


# ---------------------------------------------------------------------------- runs tail


def test_tail_of_a_finished_run_prints_its_events_and_ending(recorded: Path) -> None:
    result = cub(["runs", "tail", "r2-stuck"], recorded)
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("run r2-stuck ended failed (exit 1): the agent is stuck")
    events = read_events(recorded, "r2-stuck")
    journal = [line for line in lines[:-1] if not line.startswith("  │ ")]
    assert len(journal) == len(events)
    for line, event in zip(journal, events, strict=True):
        assert line.startswith(event.at[11:23] + "  ")
        if event.kind == "transition":
            assert f"{event.state_from} → {event.state_to} ({event.trigger})" in line
        else:
            assert event.kind in line
    # The agent's output, replayed from its log after the event that started it.
    output = [line for line in lines if line.startswith("  │ ")]
    assert output[-1] == "  │ <stuck>the spec contradicts itself</stuck>"
    started = next(i for i, line in enumerate(lines) if "agent_started [stuck1]" in line)
    assert lines.index(output[0]) > started


def _follow(proc: subprocess.Popen[str]) -> tuple[list[tuple[float, str]], threading.Thread]:
    """Lines of ``proc``'s stdout with the time each arrived, read by a thread."""
    got: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return got, reader


def _tail_live(tmp_path: Path, task_id: str, *extra: str) -> tuple[list[tuple[float, str]], float]:
    project = make_project(tmp_path / "project", [task(task_id)])
    run = start_cub(
        ["run", *command_harness(make_agent(tmp_path / "bin")), "--task", task_id, *extra], project
    )
    try:
        wait_for_file(runs_dir(project) / "latest" / "status.json", timeout=20)
        tail = start_cub(["runs", "tail"], project)
        got, reader = _follow(tail)
        run.communicate(timeout=30)
        run_ended = time.monotonic()
        assert tail.wait(timeout=10) == 0, tail.stderr.read() if tail.stderr else ""
        reader.join(timeout=5)
        assert tail.stderr is not None and "Traceback" not in tail.stderr.read()
        tail.stderr.close()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, run.stderr
    return got, run_ended


def test_tail_follows_a_live_run_until_it_ends(tmp_path: Path) -> None:
    got, run_ended = _tail_live(tmp_path, "tick1")
    lines = [line for _, line in got]
    output = [line for line in lines if line.startswith("  │ ")]
    assert output == [f"  │ line {i} of tick1" for i in range(10)]
    assert any("selecting → executing (start_task)" in line for line in lines)
    assert any("agent_started [tick1]" in line for line in lines)
    assert any("executing → settling (attempt_ended)" in line for line in lines)
    assert re.fullmatch(r"run run-\S+ ended completed \(exit 0\): .+", lines[-1]), lines[-1]
    # Streamed as it happened: the agent's first line was shown long before the run ended.
    first_output_at = next(at for at, line in got if line.startswith("  │ "))
    assert run_ended - first_output_at > 0.5


def test_tail_follows_the_next_attempt_of_a_retried_task(tmp_path: Path) -> None:
    got, _ = _tail_live(tmp_path, "tickretry1", "--on-failure", "retry")
    output = [line for _, line in got if line.startswith("  │ ")]
    # The second attempt's log replaces the first one's (moved to attempt-1/): both are shown
    # whole, in order.
    assert output == [f"  │ first {i} of tickretry1" for i in range(5)] + [
        f"  │ line {i} of tickretry1" for i in range(5)
    ]


def test_tail_ends_when_the_runner_dies(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", [task("sleep1")])
    live = LiveRun(project, tmp_path / "bin", "sleep1")
    tail = start_cub(["runs", "tail"], project)
    try:
        got, reader = _follow(tail)
        wait_until(
            lambda: any("sleeping until released" in line for _, line in got),
            what="the agent's output in the tail",
        )
        live.kill()
        assert tail.wait(timeout=15) == 0
        reader.join(timeout=5)
    finally:
        live.kill()
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert got[-1][1].startswith(f"run {live.run_dir.name} ended force_killed (exit 137): ")
    assert read_run(project).recorded_by == "recovery"
    wait_until(lambda: not is_alive(live.agent_pid), timeout=5, what="agent gone")


# ---------------------------------------------------------------------------- runs prune


def test_prune_keep_removes_older_finished_runs(project: Path) -> None:
    result = cub(["runs", "prune", "--keep", "1"], project)
    assert result.stdout.strip() == "removed 2 run(s)"
    assert [r.run_id for r in all_runs(project)] == ["r3-retry"]
    assert latest_target(project) == "r3-retry"
    assert listed_ids(cub(["runs", "list"], project).stdout) == ["r3-retry"]
    assert cub(["runs", "prune", "--keep", "1"], project).stdout.strip() == "removed 0 run(s)"
    assert_one_line_error(run_cub(["runs", "prune"], project), "--keep", "--older-than", code=2)
    bad = run_cub(["runs", "prune", "--older-than", "soon"], project)
    assert bad.returncode == 2 and "Invalid value for --older-than" in bad.stderr, bad.stderr


def test_prune_older_than_repoints_latest(project: Path) -> None:
    # The newest run (the one `latest` points at) started, say, three days ago.
    set_started(project, "r3-retry", datetime.now(UTC) - timedelta(days=3))
    assert latest_target(project) == "r3-retry"
    result = cub(["runs", "prune", "--older-than", "2d"], project)
    assert result.stdout.strip() == "removed 1 run(s)"
    assert sorted(r.run_id for r in all_runs(project)) == ["r1-ok", "r2-stuck"]
    assert latest_target(project) == "r2-stuck"
    assert (
        msgspec.json.decode(
            cub(["runs", "show", "latest", "--json"], project).stdout, type=RunRecord
        ).run_id
        == "r2-stuck"
    )
    cub(["runs", "prune", "--older-than", "0s"], project)
    assert all_runs(project) == []
    assert not os.path.lexists(runs_dir(project) / "latest")
    assert_one_line_error(run_cub(["status"], project), code=1)


def test_prune_never_removes_a_live_run(project: Path, tmp_path: Path) -> None:
    live = LiveRun(project, tmp_path / "bin", "sleep1")
    try:
        result = cub(["runs", "prune", "--keep", "0"], project)
        assert result.stdout.strip() == "removed 3 run(s)"
        assert live.run_dir.is_dir() and (live.run_dir / "status.json").is_file()
        assert latest_target(project) == live.run_dir.name
        cub(["runs", "prune", "--older-than", "0s"], project)
        assert live.run_dir.is_dir()
        ended = live.finish()
    finally:
        live.kill()
    assert ended.returncode == 0, ended.stderr
    assert [r.run_id for r in all_runs(project)] == [live.run_dir.name]
    assert read_run(project).state == "completed"


# ----------------------------------------------------------------------- live and recovered


def test_status_and_listing_of_a_live_run(project: Path, tmp_path: Path) -> None:
    live = LiveRun(project, tmp_path / "bin", "sleep1", "--budget-tokens", "1000")
    try:
        wait_until(lambda: live.status().budget.tokens_used == 250, what="250 tokens recorded")
        out = cub(["status"], project).stdout
        head, task_line, budget, *_ = out.splitlines()
        assert re.fullmatch(
            rf"run {live.run_dir.name}: executing, running for [\d.]+(ms|s)", head
        ), head
        assert task_line == "  task sleep1 (attempt 1): task sleep1"
        assert budget.startswith("  250 tokens, cost unknown, ")  # no price: unknown, not $0
        assert budget.endswith("tokens 25% of 1000")

        status = msgspec.json.decode(cub(["status", "--json"], project).stdout, type=StatusRecord)
        assert status.state == "executing"
        assert status.current_task is not None
        assert (status.current_task.id, status.current_task.attempt) == ("sleep1", 1)
        assert status.current_task.harness_pid == live.agent_pid
        assert (status.budget.tokens_used, status.budget.tokens_limit) == (250, 1000)

        listing = cub(["runs", "list"], project).stdout
        assert listed_ids(listing)[0] == live.run_dir.name
        fields = rows(listing)[live.run_dir.name]
        assert fields[2:6] == ["executing", "live", "0/0", "250"]
        assert summaries(project)[0].live is True

        show = cub(["runs", "show", "latest"], project).stdout
        assert "state     executing  (live, updated " in show
        assert "running   sleep1 attempt 1 since " in show
        assert "tokens 25% of 1000" in show
        ended = live.finish()
    finally:
        live.kill()
    assert ended.returncode == 0, ended.stderr
    assert cub(["status"], project).stdout.startswith(
        f"last run {live.run_dir.name}: completed (exit 0)"
    )


def test_status_without_runs_is_a_one_line_error(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", [task("ok1")])
    result = run_cub(["status"], project)
    assert_one_line_error(result, "no runs", code=1)
    assert result.stdout == ""
    assert_one_line_error(run_cub(["status", "--json"], project), "no runs", code=1)
    assert_one_line_error(run_cub(["runs", "show"], project), "no runs", code=1)
    assert_one_line_error(run_cub(["runs", "tail"], project), "no runs", code=1)
    listing = cub(["runs", "list"], project)
    assert (listing.stdout, listing.stderr) == ("", "no runs recorded\n")
    assert cub(["runs", "list", "--json"], project).stdout == "[]\n"


def test_status_of_a_finished_run(recorded: Path) -> None:
    out = cub(["status"], recorded).stdout.splitlines()
    assert out[0] == f"last run r3-retry: completed (exit 0) — {read_run(recorded).reason}"
    assert out[1].strip().startswith("300 tokens")
    record = msgspec.json.decode(cub(["status", "--json"], recorded).stdout, type=RunRecord)
    assert record == read_run(recorded, "r3-retry")


def test_a_killed_runner_is_recovered_by_runs_list(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", TASKS)
    live = LiveRun(project, tmp_path / "bin", "sleep1")
    try:
        wait_until(lambda: live.status().state == "executing", what="executing")
        assert is_alive(live.agent_pid)
    finally:
        live.kill()  # SIGKILL: nothing of cub runs after this
    assert not (live.run_dir / "run.json").exists()
    assert is_alive(live.agent_pid)

    result = cub(["runs", "list"], project)
    assert f"recovered run {live.run_dir.name}" in result.stderr
    fields = rows(result.stdout)[live.run_dir.name]
    assert fields[2:4] == ["force_killed", "137"]
    wait_until(lambda: not is_alive(live.agent_pid), timeout=5, what="agent gone")

    record = read_run(project)
    assert (record.state, record.reason_code, record.recorded_by) == (
        "force_killed",
        "runner_died",
        "recovery",
    )
    assert read_tasks(project)["sleep1"]["status"] == "open"
    show = cub(["runs", "show", "latest"], project)
    assert "state     force_killed  exit 137  (recorded by recovery)" in show.stdout
    assert any(line.split()[:3] == ["sleep1", "#1", "killed"] for line in show.stdout.splitlines())
    # Recovered once: later readers find a finished run and say nothing.
    again = cub(["runs", "list"], project)
    assert again.stderr == ""
    assert summaries(project)[0].state == "force_killed"


# ------------------------------------------------------------------------------- parallel


@pytest.fixture(scope="module")
def parallel_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A `cub run --parallel 2` of two tasks, if this cub can run one yet."""
    root = tmp_path_factory.mktemp("parallel")
    with isolated_env(tmp_path_factory):
        project = make_project(root / "project", [task("ok1"), task("ok2")])
        agent = command_harness(make_agent(root / "bin"))
        result = run_cub(["run", *agent, "--parallel", "2"], project)
    text = result.stdout + result.stderr
    if result.returncode != 0 and "not available" in text:
        pytest.skip(next(line for line in text.splitlines() if "not available" in line).strip())
    assert result.returncode == 0, (result.stdout, result.stderr)
    yield project


def test_parallel_run_is_listed_with_its_children(parallel_project: Path) -> None:
    project = parallel_project
    found = summaries(project)
    (top,) = [s for s in found if s.parent_run_id is None]
    assert top.mode == "parallel"
    assert (top.state, top.tasks.succeeded, top.budget.tokens_used) == ("completed", 2, 300)
    children = [s for s in found if s.parent_run_id == top.run_id]
    assert len(children) == 2
    assert all(
        (s.state, s.exit_code, s.budget.tokens_used) == ("completed", 0, 150) for s in children
    )
    listing = rows(cub(["runs", "list"], project).stdout)
    assert listing[top.run_id][1:5] == ["parallel", "completed", "0", "2/0"]
    assert listing[top.run_id][5] == "300"
    show = cub(["runs", "show", top.run_id], project).stdout.splitlines()
    listed_children = show[show.index("children") + 1 :]
    for child in children:
        assert any(
            line.split()[:4] == [child.run_id, "completed", "exit", "0"] for line in listed_children
        ), show


def test_latest_after_a_parallel_run_is_the_parallel_run(parallel_project: Path) -> None:
    # Each child run is created after the parent, but `latest` (so `cub status` and
    # `cub runs show`) is the run the user started.
    latest = read_run(parallel_project, "latest")
    assert latest.mode == "parallel"
    out = cub(["status"], parallel_project).stdout
    assert out.startswith(f"last run {latest.run_id}: completed (exit 0)")


# ------------------------------------------------------------------------ shell completion


def test_run_ids_complete_in_the_shell(recorded: Path) -> None:
    def complete(words: str) -> list[str]:
        env = {
            "_CUB_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        result = run_cub([], recorded, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("cub runs show r") == ["plain,r3-retry", "plain,r2-stuck", "plain,r1-ok"]
    assert complete("cub runs tail l") == ["plain,latest"]
    assert complete("cub runs ") == [
        "plain,list",
        "plain,prune",
        "plain,report",
        "plain,show",
        "plain,tail",
    ]
    assert sorted(r.run_id for r in all_runs(recorded)) == ["r1-ok", "r2-stuck", "r3-retry"]
