"""Fault injection: start a real `cub run` on a backlog of scripted agents, hit it with SIGKILL,
SIGINT, SIGTERM or two SIGINTs at a random moment, run recovery, and check what is left.

One trial is fully described by its kind and seed (`random.Random(f"{kind}:{seed}")` draws the
backlog, each agent's behaviour and the moments of the signals), so a failure can be replayed:

    .venv/bin/python tools/soak/fault_injection.py --kind sigkill --seed 17 --keep

Used by tests/e2e/test_fault_injection.py (a CI-sized sample) and tools/soak/fault_injection.py
(the large one). Every problem found is raised as a `TrialFailed` naming the seed and the paths.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from cub.chart.definition import TERMINAL_STATES
from cub.records.schemas import Event, RunRecord, StatusRecord, TaskAttempt
from tests.helpers.agents import TEST_TOKEN_VAR, processes_with_token, write_script
from tests.helpers.cli import make_project, run_cub, start_cub, task
from tests.helpers.env import isolate_environment as _isolate_environment

KINDS = ("sigkill", "sigint", "sigterm", "double_sigint")

# The moment of the (first) signal: drawn uniformly from [0, MAX_DELAY_S] seconds, where the
# maximum grows with the backlog (about as long as the run takes, so that most signals land
# while it works, some after it ended). SIGKILL counts from the start of the process; the other
# signals from the moment the run's directory appears (before that cub is still importing and
# parsing its command line; see tools/soak/fault_injection.py).
MAX_DELAY_S = 1.5
DELAY_PER_TASK_S = 0.07
DELAY_BASE_S = 0.25
# SIGKILL's window also covers cub's start-up (interpreter, imports, recovery, run directory).
STARTUP_S = 0.25
# The second SIGINT follows the first after up to this long.
MAX_GAP_S = 0.5
GRACE = "0.2s"
# How long a run may take to end after its (last) signal before the trial counts as a hang.
EXIT_TIMEOUT_S = 15.0
RECOVERY_TIMEOUT_S = 30.0
# A second signal ends the run within a second (SPEC §6); trials run several at once on a
# small machine, so they only catch gross misses. tools/bench/bench_signals.py measures it.
FORCE_KILL_LIMIT_S = 3.0

_NATURAL_ENDINGS = {
    ("completed", "all_tasks_done"),
    ("completed", "no_ready_tasks"),
    ("failed", "tasks_failed"),
}

# The scripted agent: reads its behaviour for this task from plan.json (beside it), reads the
# prompt, maybe forks a setsid() grandchild that ignores signals, prints, sleeps, exits. It runs
# without site-packages (-S) to start quickly.
_AGENT = """#!{python} -S
import json, os, signal, sys, time
plan = json.load(open({plan!r}))[os.environ["CUB_TASK_ID"]]
if plan["ignore_sigint"]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
if plan["grandchild"]:
    if os.fork() == 0:
        os.setsid()
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        time.sleep(30)
        os._exit(0)
sys.stdin.read()
end = time.monotonic() + plan["sleep"]
for i in range(plan["lines"]):
    print(f"{{os.environ['CUB_TASK_ID']}}: line {{i}}", flush=True)
while plan["chatty"] and time.monotonic() < end:
    print("working", flush=True)
    time.sleep(0.002)
time.sleep(max(0.0, end - time.monotonic()))
sys.exit(plan["exit"])
"""


class TrialFailed(AssertionError):
    pass


@dataclass
class Trial:
    kind: str
    seed: int
    root: Path  # the trial's own directory: project, agent, plan
    rng: random.Random = field(init=False)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Filled in as the trial runs.
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    recovery_stderr: str = ""
    delays: list[float] = field(default_factory=list)
    exited_after_s: float | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.kind}:{self.seed}")

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def runs(self) -> Path:
        return self.project / ".cub" / "runs"

    def fail(self, problem: str) -> TrialFailed:
        return TrialFailed(
            f"[{self.kind} seed={self.seed}] {problem}\n"
            f"  trial directory: {self.root}\n"
            f"  runs: {self.runs}\n"
            f"  signals after: {', '.join(f'{d:.3f}s' for d in self.delays)}; "
            f"cub exit code {self.returncode}\n"
            f"  replay: .venv/bin/python tools/soak/fault_injection.py --kind {self.kind} "
            f"--seed {self.seed} --keep\n"
            f"  cub stdout (tail): {self.stdout[-1500:]!r}\n"
            f"  cub stderr (tail): {self.stderr[-1500:]!r}\n"
            f"  recovery stderr (tail): {self.recovery_stderr[-800:]!r}"
        )


# ------------------------------------------------------------------------------------ setup


def _make(trial: Trial) -> list[str]:
    rng = trial.rng
    count = rng.randint(3, 14)
    ids = [f"t{i:02d}" for i in range(count)]
    plan = {
        task_id: {
            "sleep": rng.uniform(0.0, 0.05),
            "lines": rng.randint(0, 30),
            "chatty": rng.random() < 0.3,
            "ignore_sigint": rng.random() < 0.25,
            "grandchild": rng.random() < 0.25,
            "exit": 1 if rng.random() < 0.15 else 0,
        }
        for task_id in ids
    }
    trial.root.mkdir(parents=True, exist_ok=True)
    make_project(trial.project, [task(task_id) for task_id in ids])
    (trial.root / "plan.json").write_text(json.dumps(plan))
    if rng.random() < 0.5:
        hooks = trial.project / ".cub" / "hooks" / "post-task.d"
        hooks.mkdir(parents=True)
        write_script(hooks / "10-note", "#!/bin/sh\nexit 0\n")
    agent = trial.root / "agent"
    agent.write_text(_AGENT.format(python=sys.executable, plan=str(trial.root / "plan.json")))
    agent.chmod(0o755)
    return [
        "run",
        "--harness",
        "command",
        "--harness-cmd",
        str(agent),
        "--grace",
        GRACE,
        "--on-failure",
        "continue",
    ]


def _wait_for_run_dir(trial: Trial, proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """Until the run's directory exists (from then on cub handles signals itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if trial.runs.is_dir() and any(_run_dirs(trial.runs)):
            return
        time.sleep(0.002)


def _run_dirs(runs: Path) -> Iterator[Path]:
    return (p for p in runs.iterdir() if p.is_dir() and not p.is_symlink())


# -------------------------------------------------------------------------------- the trial


def run_trial(kind: str, seed: int, base: Path) -> Trial:
    """Run one trial under ``base``; raises `TrialFailed` on any problem."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    trial = Trial(kind, seed, base / f"{kind}-{seed:05d}")
    if trial.root.exists():
        shutil.rmtree(trial.root)
    args = _make(trial)
    env = {TEST_TOKEN_VAR: trial.token}
    proc = start_cub(args, trial.project, env=env)
    try:
        sent = _deliver(trial, proc)
        try:
            trial.stdout, trial.stderr = proc.communicate(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise trial.fail(f"cub did not exit within {EXIT_TIMEOUT_S}s of the signal") from None
        trial.exited_after_s = time.monotonic() - sent
        trial.returncode = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _recover(trial, env)
    check_trial(trial)
    return trial


def _deliver(trial: Trial, proc: subprocess.Popen[str]) -> float:
    """Send the trial's signal(s); returns when the last one was sent (monotonic)."""
    rng = trial.rng
    tasks = len(json.loads((trial.root / "plan.json").read_text()))
    window = DELAY_BASE_S + DELAY_PER_TASK_S * tasks
    if trial.kind == "sigkill":
        window += STARTUP_S
    delay = rng.uniform(0.0, min(MAX_DELAY_S, window))
    gap = rng.uniform(0.0, MAX_GAP_S)
    if trial.kind == "sigkill":
        time.sleep(delay)
        trial.delays = [delay]
        os.kill(proc.pid, signal.SIGKILL)
        return time.monotonic()
    _wait_for_run_dir(trial, proc)
    time.sleep(delay)
    first = signal.SIGTERM if trial.kind == "sigterm" else signal.SIGINT
    os.kill(proc.pid, first)
    sent = time.monotonic()
    trial.delays = [delay]
    if trial.kind == "double_sigint":
        time.sleep(gap)
        os.kill(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        trial.delays.append(delay + gap)
    return sent


def _recover(trial: Trial, env: dict[str, str]) -> None:
    try:
        result = run_cub(["runs", "list"], trial.project, env=env, timeout=RECOVERY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise trial.fail(f"`cub runs list` (recovery) hung for {RECOVERY_TIMEOUT_S}s") from None
    trial.recovery_stderr = result.stderr
    if result.returncode != 0:
        raise trial.fail(f"`cub runs list` (recovery) exited {result.returncode}")
    if "Traceback" in result.stderr + result.stdout:
        raise trial.fail("`cub runs list` (recovery) printed a traceback")


# ------------------------------------------------------------------------------------ checks


def check_trial(trial: Trial) -> None:
    """What must hold however cub was stopped, once recovery has run."""
    if trial.kind != "sigkill" and "Traceback" in trial.stderr + trial.stdout:
        raise trial.fail("cub printed a traceback")
    survivors = _survivors(trial)
    if survivors:
        raise trial.fail(f"agent processes survived: {survivors}")
    records = _check_runs(trial)
    _check_json_files(trial)
    _check_tasks(trial)
    if trial.kind == "sigkill":
        _check_after_sigkill(trial, records)
    else:
        _check_after_signals(trial, records)


def _survivors(trial: Trial) -> list[str]:
    # A process killed a moment ago may still be on its way out.
    deadline = time.monotonic() + 1.0
    while True:
        found = processes_with_token(trial.token)
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    described = []
    for proc in found:
        try:
            described.append(f"pid {proc.pid} {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:  # gone (or a zombie, which ZombieProcess is) since found
            continue
        except psutil.AccessDenied:  # alive all the same: still a survivor
            described.append(f"pid {proc.pid} (command line not readable)")
    return described


def _check_runs(trial: Trial) -> list[RunRecord]:
    if not trial.runs.is_dir():
        if trial.kind == "sigkill":
            return []  # killed before it created anything
        raise trial.fail("no .cub/runs directory")
    records = []
    for run_dir in sorted(_run_dirs(trial.runs)):
        if ".." in run_dir.name:
            raise trial.fail(f"recovery left a half-created run directory: {run_dir}")
        path = run_dir / "run.json"
        if not path.exists():
            raise trial.fail(f"run without run.json after recovery: {run_dir}")
        try:
            record = msgspec.json.decode(path.read_bytes(), type=RunRecord)
        except msgspec.DecodeError as exc:
            raise trial.fail(f"{path} does not decode: {exc}") from None
        if record.state not in TERMINAL_STATES:
            raise trial.fail(f"{path}: state {record.state!r} is not terminal")
        if record.history and record.history[-1].to != record.state:
            raise trial.fail(f"{path}: history ends in {record.history[-1].to}, not the state")
        _check_events(trial, run_dir, record)
        for log in run_dir.glob("tasks/**/harness.log"):
            if not (log.parent / "task.json").exists():
                raise trial.fail(f"an attempt that started has no task.json: {log.parent}")
        records.append(record)
    return records


def _check_events(trial: Trial, run_dir: Path, record: RunRecord) -> None:
    path = run_dir / "events.jsonl"
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        raise trial.fail(f"{path} ends in the middle of a line")
    events = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            events.append(msgspec.json.decode(line, type=Event))
        except msgspec.DecodeError as exc:
            raise trial.fail(f"{path}:{number} does not decode: {exc}") from None
    seqs = [e.seq for e in events]
    if seqs != list(range(1, len(events) + 1)):
        raise trial.fail(f"{path}: seq is not 1, 2, 3, ...: {seqs}")
    endings = [e for e in events if e.kind == "transition" and e.state_to in TERMINAL_STATES]
    if len(endings) != 1 or endings[0].state_to != record.state:
        found = [(e.trigger, e.state_to) for e in endings]
        raise trial.fail(f"{path}: expected one transition into {record.state}, got {found}")


_TYPED = {"run.json": RunRecord, "status.json": StatusRecord, "task.json": TaskAttempt}


def _check_json_files(trial: Trial) -> None:
    for path in (trial.project / ".cub").rglob("*.json"):
        try:
            data = path.read_bytes()
            kind = _TYPED.get(path.name)
            if kind is not None:
                msgspec.json.decode(data, type=kind)
            else:
                json.loads(data)
        except (ValueError, msgspec.DecodeError) as exc:
            raise trial.fail(f"{path} is truncated or corrupt: {exc}") from None


def _check_tasks(trial: Trial) -> None:
    path = trial.project / ".cub" / "tasks.jsonl"
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise trial.fail(f"{path} ends in the middle of a line")
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise trial.fail(f"{path}:{number} does not decode: {exc}") from None
        if entry.get("status") == "in_progress":
            raise trial.fail(
                f"{path}:{number}: task {entry['id']} stranded in_progress "
                f"(assignee {entry.get('assignee')})"
            )


def _check_after_sigkill(trial: Trial, records: list[RunRecord]) -> None:
    if len(records) > 1:
        raise trial.fail(f"{len(records)} runs for one invocation")
    if trial.returncode != -signal.SIGKILL:
        # cub ended on its own before the kill: its own record, its own exit code.
        if not records:
            raise trial.fail("cub exited by itself without a run record")
        record = records[0]
        if record.recorded_by != "machine" or record.exit_code != trial.returncode:
            raise trial.fail(
                f"cub exited {trial.returncode} by itself but the record says "
                f"{record.state}/{record.exit_code} by {record.recorded_by}"
            )
        return
    for record in records:
        if record.recorded_by != "recovery":
            continue  # cub wrote it just before the kill
        ending = (record.state, record.exit_code, record.reason_code)
        if ending == ("force_killed", 137, "runner_died"):
            continue
        # Or the runner had entered its terminal state and died writing run.json: recovery
        # records that ending, as status.json and the journal (checked above) have it.
        status = msgspec.json.decode(
            (trial.runs / record.run_id / "status.json").read_bytes(), type=StatusRecord
        )
        if status.state != record.state or record.reason_code == "runner_died":
            raise trial.fail(
                f"recovered run {record.run_id}: {record.state}/{record.exit_code}/"
                f"{record.reason_code}, status.json says {status.state}; expected "
                "force_killed/137/runner_died or the ending the runner had entered"
            )


def _check_after_signals(trial: Trial, records: list[RunRecord]) -> None:
    if len(records) != 1:
        raise trial.fail(f"expected exactly one run, found {len(records)}")
    record = records[0]
    if record.recorded_by != "machine":
        raise trial.fail(f"the run was recorded by {record.recorded_by}, not by cub itself")
    if trial.returncode != record.exit_code:
        raise trial.fail(
            f"cub exited {trial.returncode}, its record says {record.exit_code} ({record.state})"
        )
    ending = (record.state, record.reason_code)
    interrupted = any(t.trigger == "interrupt" for t in record.history)
    word = "sigterm" if trial.kind == "sigterm" else "sigint"
    expected_code = {"sigint": 130, "sigterm": 143}[word]
    if record.state == "interrupted":
        if record.reason_code != word or record.exit_code != expected_code:
            raise trial.fail(f"interrupted with {record.reason_code}/{record.exit_code}")
    elif record.state == "force_killed":
        if trial.kind != "double_sigint" or record.reason_code != "second_interrupt":
            raise trial.fail(f"force_killed ({record.reason_code}) after a {trial.kind}")
        if trial.exited_after_s is not None and trial.exited_after_s > FORCE_KILL_LIMIT_S:
            raise trial.fail(f"force kill took {trial.exited_after_s:.2f}s after the second signal")
    elif interrupted or ending not in _NATURAL_ENDINGS:
        raise trial.fail(f"unexpected ending {ending} (interrupt in history: {interrupted})")
    for attempt_file in (trial.runs / record.run_id / "tasks").glob("*/task.json"):
        attempt = msgspec.json.decode(attempt_file.read_bytes(), type=TaskAttempt)
        if record.state == "interrupted" and attempt.outcome == "killed":
            raise trial.fail(f"{attempt_file}: attempt killed in an orderly stop")


# ------------------------------------------------------------------------------- many trials


def isolate_environment(home: Path) -> None:
    """Outside pytest (the soak): what tests/conftest.py does for every test, for this process
    and so for every cub it starts: a private home, no user config, a pinned git identity."""
    _isolate_environment(home)


@dataclass
class Summary:
    kind: str
    trials: int = 0
    failures: list[str] = field(default_factory=list)
    endings: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_trials(
    kind: str,
    seeds: range,
    base: Path,
    *,
    workers: int = 3,
    keep: bool = False,
    stop_after: int | None = None,
) -> Summary:
    """Run ``kind`` trials for every seed on a small thread pool; passing trials' directories
    are removed unless ``keep``. Collects failures instead of stopping at the first."""
    summary = Summary(kind)
    start = time.monotonic()

    def one(seed: int) -> tuple[int, str | None, str | None]:
        if stop_after is not None and len(summary.failures) >= stop_after:
            return seed, None, "skipped"
        try:
            trial = run_trial(kind, seed, base)
        except TrialFailed as exc:
            return seed, str(exc), None
        ending = _ending_of(trial)
        if not keep:
            shutil.rmtree(trial.root, ignore_errors=True)
        return seed, None, ending

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _seed, failure, ending in pool.map(one, seeds):
            if ending == "skipped":
                continue
            summary.trials += 1
            if failure is not None:
                summary.failures.append(failure)
            elif ending is not None:
                summary.endings[ending] = summary.endings.get(ending, 0) + 1
    summary.seconds = time.monotonic() - start
    return summary


def _ending_of(trial: Trial) -> str:
    records = (
        [
            msgspec.json.decode((d / "run.json").read_bytes(), type=RunRecord)
            for d in _run_dirs(trial.runs)
        ]
        if trial.runs.is_dir()
        else []
    )
    if not records:
        return "no run"
    record = records[0]
    who = "recovery" if record.recorded_by == "recovery" else "cub"
    return f"{record.state} ({record.reason_code}, by {who})"


# ----------------------------------------------------------------- what a dead runner leaves


def orphaned_run(project: Path, run_id: str, triggers: tuple[str, ...] = ()) -> Path:
    """A run as a runner that died leaves it: created through cub's own store and machine,
    moved along ``triggers``, then its runner lock let go (as the kernel does when the runner
    dies). Its status.json names this (live) process as the runner."""
    from cub.records.store import unlock_run
    from tests.helpers.machines import new_machine

    machine = new_machine(project, run_id, argv=("run", "--orphaned"))
    for trigger in triggers:
        getattr(machine, trigger)()
    store = machine.ctx.store
    assert store is not None and store.runner_lock is not None
    unlock_run(store.runner_lock)
    return store.run_dir


def orphaned_runs(project: Path, count: int) -> list[Path]:
    """``count`` runs whose runners died while selecting their first task."""
    return [
        orphaned_run(project, f"orphan-{i:03d}", ("validate", "accept", "prepared"))
        for i in range(count)
    ]
