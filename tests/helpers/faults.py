"""Fault injection: start a real `cub run` on a backlog of scripted agents, hit it with SIGKILL,
SIGINT, SIGTERM or two SIGINTs at a random moment (or let it end by itself), run recovery, and
check what is left.

One trial is fully described by its kind and seed (`random.Random(f"{kind}:{seed}")` draws the
backlog, each agent's behaviour, the run's options and the moments of the signals), so a
failure can be replayed:

    .venv/bin/python tools/soak/fault_injection.py --kind sigkill --seed 17 --keep

Besides the signals, a trial may draw issue 13's endings: a token budget that an agent's final
usage report crosses, cub's stdout a pipe whose reader goes away (EPIPE), an agent that deletes
every ``*.lock`` under the project and then asks `cub status` (as another terminal would), and
in ``--in-place`` trials an agent that deletes or corrupts the task file. Every agent reports
usage in ``cub_usage`` lines and writes what it reported to a side file, so the usage cub
recorded can be checked against what it was told.

Used by tests/e2e/test_fault_injection.py (a CI-sized sample) and tools/soak/fault_injection.py
(the large one). Every problem found is raised as a `TrialFailed` naming the seed and the paths.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
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
from cub.records.location import runs_dir, state_dir
from cub.records.schemas import Event, RunRecord, StatusRecord, TaskAttempt
from cub.tasks.jsonl import JsonlBackend
from tests.helpers.agents import TEST_TOKEN_VAR, processes_with_token, write_script
from tests.helpers.cli import make_project, run_cub, start_cub, task
from tests.helpers.env import isolate_environment as _isolate_environment

# The four stops, and `natural`: no signal at all, the run ends by itself (its ending is then
# predicted from the plan: budget crossed, task file changed, tasks failed, or completed).
SIGNAL_KINDS = ("sigkill", "sigint", "sigterm", "double_sigint")
KINDS = (*SIGNAL_KINDS, "natural")

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
# The second SIGINT follows the first after up to this long: about half the pairs fall within
# cub's same-request window (one interrupt, cub.lifecycle.signals), half are a second request.
MAX_GAP_S = 1.0
GRACE = "0.2s"
# Two SIGINTs: three agents in four ignore the first, and the grace outlasts the widest gap, so
# that a second request (past the same-request window) often lands while the run is still
# stopping: the CI sample of 30 reaches `force_killed` whatever the machine's load.
DOUBLE_GRACE = "1.5s"
IGNORE_SIGINT_P = {"double_sigint": 0.75}
# How long an agent works at most. Two SIGINTs end a run `force_killed` only when the second
# finds an agent still there that ignored the first: with agents of a few milliseconds a sample
# of 30 reached that ending once or twice, and now and then not at all. (The draw is one
# random number whatever its range, so the rest of every sample stays as it was.)
AGENT_SLEEP_S = {"double_sigint": 0.8}
AGENT_SLEEP_DEFAULT_S = 0.05
# How long a run may take to end after its (last) signal before the trial counts as a hang;
# a `natural` run has its whole backlog to do (an agent asking `cub status` takes a while).
EXIT_TIMEOUT_S = 15.0
NATURAL_TIMEOUT_S = 60.0
RECOVERY_TIMEOUT_S = 30.0
# A second signal ends the run within a second (SPEC §6); trials run several at once on a
# small machine, so they only catch gross misses. tools/bench/bench_signals.py measures it.
FORCE_KILL_LIMIT_S = 3.0

# How often a trial draws each of issue 13's endings (a `natural` trial draws the budget and
# the task-file change more often: it is where their endings are predicted exactly).
IN_PLACE_P = 0.3
BUDGET_P = {"natural": 0.5, "other": 0.25}
TAMPER_P = {"natural": 0.6, "other": 0.4}  # of the --in-place trials
CLOSE_STDOUT_P = 0.25
DELETE_LOCKS_P = 0.15
COMMIT_P = 0.3

# The name of the dry run that settles claims left in a repaired task file (see _settle).
SETTLE_RUN = "settle"

_NATURAL_ENDINGS = {
    ("completed", "all_tasks_done"),
    ("completed", "no_ready_tasks"),
    ("failed", "tasks_failed"),
}
_BUDGET_ENDING = ("budget_exhausted", "token_budget")
_TAMPER_ENDING = ("failed", "task_file_changed")

# The scripted agent: reads its behaviour for this task from plan.json (beside it), reads the
# prompt, maybe forks a setsid() grandchild that ignores signals, reports usage, prints,
# maybe deletes every *.lock under the project and asks `cub status`, maybe deletes or
# corrupts the task file, sleeps, maybe commits, maybe gives a final usage report, exits. It
# runs without site-packages (-S) to start quickly.
#
# What it reports goes to reports/<task>.jsonl too, one `pending` entry before each usage line
# and one `done` after it, with SIGINT and SIGTERM blocked in between (their handlers run once
# both are written); only a SIGKILL can leave a `pending` without its `done`, and then cub may
# or may not have read that line. The final report is given with the signals blocked to the
# end: that agent exits with its own code whatever it is sent after it (a real agent's final
# report is the end of its work).
_AGENT = """#!{python} -S
import json, os, shutil, signal, subprocess, sys, time
ROOT = {root!r}
PYTHON = {python!r}
TASK = os.environ["CUB_TASK_ID"]
everything = json.load(open(os.path.join(ROOT, "plan.json")))
plan = everything["tasks"][TASK]
project = everything["project"]
STOPS = {{signal.SIGINT, signal.SIGTERM}}
report = open(os.path.join(ROOT, "reports", TASK + ".jsonl"), "a")

def note(**entry):
    report.write(json.dumps(entry) + "\\n")
    report.flush()

def usage(figures):
    tokens_in, tokens_out, cost = figures
    line = {{"cub_usage": {{"input_tokens": tokens_in, "output_tokens": tokens_out,
                           "cost_usd": cost}}}}
    note(pending=figures)
    os.write(1, (json.dumps(line) + "\\n").encode())
    note(done=True)

def delete_locks():
    gone = []
    for top, _dirs, files in os.walk(project):
        for name in files:
            if name.endswith(".lock"):
                try:
                    os.unlink(os.path.join(top, name))
                    gone.append(os.path.relpath(os.path.join(top, name), project))
                except OSError:
                    pass
    env = {{k: v for k, v in os.environ.items() if not k.startswith("CUB_")}}
    asked_at = time.time()
    status = subprocess.run([PYTHON, "-m", "cub", "status"], cwd=project, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    note(locks_deleted=gone, status_exit=status.returncode, status_out=status.stdout[-1500:],
         status_err=status.stderr[-1500:], asked_at=asked_at, answered_at=time.time())

def tamper(how):
    path = os.path.join(project, ".cub", "tasks.jsonl")
    shutil.copyfile(path, os.path.join(ROOT, "tasks.before-tamper.jsonl"))
    if how == "delete":
        os.unlink(path)
    else:
        with open(path, "a") as f:
            f.write("this line is not a task\\n")
    note(tampered=how)

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
note(start=os.getpid())
for figures in plan["usage"]:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    usage(figures)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
end = time.monotonic() + plan["sleep"]
for i in range(plan["lines"]):
    print(f"{{TASK}}: line {{i}}", flush=True)
if plan["delete_locks"]:
    delete_locks()
if plan["tamper"]:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    tamper(plan["tamper"])
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
while plan["chatty"] and time.monotonic() < end:
    print("working", flush=True)
    time.sleep(0.002)
time.sleep(max(0.0, end - time.monotonic()))
if plan["commit"]:
    done = subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "work " + TASK],
                          stdin=subprocess.DEVNULL, capture_output=True)
    note(commit=done.returncode)
if plan["final"] is not None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    usage(plan["final"])
    os._exit(plan["exit"])
sys.exit(plan["exit"])
"""


class TrialFailed(AssertionError):
    pass


@dataclass
class Options:
    """What a trial's run is asked to do besides its backlog (drawn from the seed)."""

    in_place: bool = False
    budget_tokens: int | None = None
    budget_task: str | None = None  # whose final report crosses the budget
    close_stdout_after: float | None = None  # seconds after the start; None: read to the end
    tamper_task: str | None = None
    tamper: str | None = None  # "delete" or "corrupt"
    lock_task: str | None = None


@dataclass
class Trial:
    kind: str
    seed: int
    root: Path  # the trial's own directory: project, agent, plan, reports
    rng: random.Random = field(init=False)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    options: Options = field(default_factory=Options)
    plan: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Filled in as the trial runs.
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    recovery_stderr: str = ""
    delays: list[float] = field(default_factory=list)
    exited_after_s: float | None = None
    killed_at: float | None = None  # when cub was sent SIGKILL (time.time())
    run_id: str | None = None
    tampered: str | None = None  # what the task file was found to be after the run

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.kind}:{self.seed}")

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def runs(self) -> Path:
        return runs_dir(self.project)

    @property
    def task_file(self) -> Path:
        return self.project / ".cub" / "tasks.jsonl"

    def fail(self, problem: str) -> TrialFailed:
        return TrialFailed(
            f"[{self.kind} seed={self.seed}] {problem}\n"
            f"  trial directory: {self.root}\n"
            f"  runs: {self.runs}\n"
            f"  options: {self.options}\n"
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
    ignore_p = IGNORE_SIGINT_P.get(trial.kind, 0.25)
    sleep = AGENT_SLEEP_S.get(trial.kind, AGENT_SLEEP_DEFAULT_S)
    trial.plan = {task_id: _draw_agent(rng, ignore_p, sleep) for task_id in ids}
    trial.options = _draw_options(trial, ids)
    trial.root.mkdir(parents=True, exist_ok=True)
    (trial.root / "reports").mkdir()
    make_project(trial.project, [task(task_id) for task_id in ids])
    plan = {"project": str(trial.project), "tasks": trial.plan}
    (trial.root / "plan.json").write_text(json.dumps(plan))
    if rng.random() < 0.5:
        hooks = trial.project / ".cub" / "hooks" / "post-task.d"
        hooks.mkdir(parents=True)
        write_script(hooks / "10-note", "#!/bin/sh\nexit 0\n")
    agent = trial.root / "agent"
    agent.write_text(_AGENT.format(python=sys.executable, root=str(trial.root)))
    agent.chmod(0o755)
    options = trial.options
    args = [
        "run",
        "--harness",
        "command",
        "--harness-cmd",
        str(agent),
        "--grace",
        DOUBLE_GRACE if trial.kind == "double_sigint" else GRACE,
        "--on-failure",
        "continue",
        "--in-place" if options.in_place else "--worktree",
    ]
    if options.budget_tokens is not None:
        args += ["--budget-tokens", str(options.budget_tokens)]
    return args


def _draw_agent(rng: random.Random, ignore_p: float, sleep: float) -> dict[str, Any]:
    return {
        "sleep": rng.uniform(0.0, sleep),
        "lines": rng.randint(0, 30),
        "chatty": rng.random() < 0.3,
        "ignore_sigint": rng.random() < ignore_p,
        "grandchild": rng.random() < 0.25,
        "exit": 1 if rng.random() < 0.15 else 0,
        # Small reports while working, a large one at the end (the one a budget is crossed by).
        "usage": [_figures(rng, 1, 50) for _ in range(rng.choice((0, 0, 1, 2, 3)))],
        "final": _figures(rng, 100, 1000) if rng.random() < 0.7 else None,
        "commit": rng.random() < COMMIT_P,
        "delete_locks": False,
        "tamper": None,
    }


def _figures(rng: random.Random, low: int, high: int) -> list[Any]:
    """Input tokens, output tokens, cost: a usage report with known numbers."""
    tokens_in, tokens_out = rng.randint(low, high), rng.randint(0, high)
    return [tokens_in, tokens_out, round(rng.randint(1, 999) * 1e-5, 5)]


def _draw_options(trial: Trial, ids: list[str]) -> Options:
    rng, plan = trial.rng, trial.plan
    side = "natural" if trial.kind == "natural" else "other"
    options = Options(in_place=rng.random() < IN_PLACE_P)
    if rng.random() < BUDGET_P[side]:
        # Crossed by one task's final report, counting everything reported before it.
        at = rng.randrange(len(ids))
        crossing = plan[ids[at]]
        if crossing["final"] is None:
            crossing["final"] = _figures(rng, 100, 1000)
        before = sum(_tokens(f) for i in ids[:at] for f in _reports(plan[i])) + sum(
            _tokens(f) for f in crossing["usage"]
        )
        options.budget_tokens = before + rng.randint(1, _tokens(crossing["final"]))
        options.budget_task = ids[at]
    if rng.random() < CLOSE_STDOUT_P:
        options.close_stdout_after = rng.uniform(0.0, 0.3 + DELAY_PER_TASK_S * len(ids))
    if rng.random() < DELETE_LOCKS_P:
        options.lock_task = rng.choice(ids)
        plan[options.lock_task]["delete_locks"] = True
    if options.in_place and rng.random() < TAMPER_P[side]:
        options.tamper_task = rng.choice(ids)
        options.tamper = rng.choice(("delete", "corrupt"))
        plan[options.tamper_task]["tamper"] = options.tamper
    return options


def _reports(agent: dict[str, Any]) -> list[list[Any]]:
    return [*agent["usage"], *([agent["final"]] if agent["final"] is not None else [])]


def _tokens(figures: list[Any]) -> int:
    return int(figures[0]) + int(figures[1])


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
    output = _Output(proc, trial.options.close_stdout_after)
    timeout = NATURAL_TIMEOUT_S if kind == "natural" else EXIT_TIMEOUT_S
    try:
        sent = _deliver(trial, proc)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            trial.stdout, trial.stderr = output.collect()
            raise trial.fail(f"cub did not exit within {timeout}s of the signal") from None
        trial.exited_after_s = time.monotonic() - sent
        trial.returncode = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        trial.stdout, trial.stderr = output.collect()
    _recover(trial, env)
    check_trial(trial, env)
    return trial


class _Output:
    """Reads cub's stdout and stderr as they come. With ``close_after`` the reading end of
    stdout is closed that many seconds after the start (0: at once), as when the reader of
    `cub run | head -1` goes away: cub's next write to it fails with EPIPE."""

    def __init__(self, proc: subprocess.Popen[str], close_after: float | None) -> None:
        self._proc = proc
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        assert proc.stdout is not None and proc.stderr is not None
        deadline = None if close_after is None else time.monotonic() + close_after
        self._threads = [
            threading.Thread(target=self._read, args=(proc.stdout, self._out, deadline)),
            threading.Thread(target=self._read, args=(proc.stderr, self._err, None)),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream: Any, into: list[bytes], deadline: float | None) -> None:
        fd = stream.fileno()
        while True:
            wait = 0.05 if deadline is None else deadline - time.monotonic()
            if deadline is not None and wait <= 0:
                break
            ready, _, _ = select.select([fd], [], [], min(wait, 0.05))
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    break
                into.append(data)
        stream.close()

    def collect(self) -> tuple[str, str]:
        for thread in self._threads:
            thread.join(timeout=RECOVERY_TIMEOUT_S)
        return (
            b"".join(self._out).decode(errors="replace"),
            b"".join(self._err).decode(errors="replace"),
        )


def _deliver(trial: Trial, proc: subprocess.Popen[str]) -> float:
    """Send the trial's signal(s); returns when the last one was sent (monotonic)."""
    rng = trial.rng
    if trial.kind == "natural":
        return time.monotonic()
    window = DELAY_BASE_S + DELAY_PER_TASK_S * len(trial.plan)
    if trial.kind == "sigkill":
        window += STARTUP_S
    delay = rng.uniform(0.0, min(MAX_DELAY_S, window))
    gap = rng.uniform(0.0, MAX_GAP_S)
    if trial.kind == "sigkill":
        time.sleep(delay)
        trial.delays = [delay]
        trial.killed_at = time.time()
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


def _settle(trial: Trial, env: dict[str, str]) -> None:
    """An agent deleted or corrupted the task file: put it back as a person would (the copy
    the agent took just before, or the file without the line it added), then let the next
    `cub run` (a dry run here) settle the claims the run could not hand back."""
    path = trial.task_file
    copy = trial.root / "tasks.before-tamper.jsonl"
    if not path.exists():
        if not copy.exists():
            raise trial.fail("the task file is gone and the agent kept no copy of it")
        trial.tampered = "delete"
        shutil.copyfile(copy, path)
    else:
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [line for line in lines if _parses(line)]
        if len(kept) == len(lines):
            return  # untouched (the agent was stopped before it got there)
        trial.tampered = "corrupt"
        path.write_bytes(b"".join(kept))
    try:
        result = run_cub(
            ["run", "--ready", "--name", SETTLE_RUN], trial.project, env=env, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise trial.fail("`cub run --ready` (settling the claims) hung") from None
    if result.returncode != 0 or "Traceback" in result.stderr:
        raise trial.fail(
            f"`cub run --ready` after the task file was repaired exited {result.returncode}: "
            f"{result.stderr[-800:]!r}"
        )


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# ------------------------------------------------------------------------------------ checks


def check_trial(trial: Trial, env: dict[str, str]) -> None:
    """What must hold however cub was stopped, once recovery has run."""
    if trial.kind != "sigkill" and "Traceback" in trial.stderr + trial.stdout:
        raise trial.fail("cub printed a traceback")
    survivors = _survivors(trial)
    if survivors:
        raise trial.fail(f"agent processes survived: {survivors}")
    records = _check_runs(trial)
    _check_json_files(trial)
    if trial.options.tamper is not None:
        _settle(trial, env)
    if trial.kind == "sigkill":
        _check_after_sigkill(trial, records)
    elif trial.kind == "natural":
        _check_natural(trial, records)
    else:
        _check_after_signals(trial, records)
    _check_lock_deleter(trial, records)
    tasks = _check_tasks(trial)
    for record in records:
        attempts = _attempts(trial, record.run_id)
        _check_finished_kept(trial, record, attempts, tasks)
        _check_usage(trial, record, attempts)


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
        raise trial.fail(f"no runs directory {trial.runs}")
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
    if records:
        trial.run_id = records[0].run_id
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
    """Every record parses: everything under .cub/ and in cub's state directory."""
    places = [trial.project / ".cub", state_dir(trial.project)]
    seen: set[Path] = set()
    for path in itertools.chain.from_iterable(p.rglob("*.json") for p in places if p.is_dir()):
        if path in seen:
            continue
        seen.add(path)
        try:
            data = path.read_bytes()
            kind = _TYPED.get(path.name)
            if kind is not None:
                msgspec.json.decode(data, type=kind)
            else:
                json.loads(data)
        except (ValueError, msgspec.DecodeError) as exc:
            raise trial.fail(f"{path} is truncated or corrupt: {exc}") from None


def _check_tasks(trial: Trial) -> dict[str, dict[str, Any]]:
    """The task file decodes and no claim is stranded (no task left `in_progress` in the file
    or in the ledger laid over it)."""
    path = trial.task_file
    if not path.exists():
        raise trial.fail(f"{path} is gone")
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise trial.fail(f"{path} ends in the middle of a line")
    tasks = {}
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise trial.fail(f"{path}:{number} does not decode: {exc}") from None
        tasks[entry["id"]] = entry
    seen = JsonlBackend(path, trial.project)._read()
    tasks = {task.id: seen.raw(index) for index, task in enumerate(seen.tasks)}
    for task_id, entry in tasks.items():
        if entry.get("status") == "in_progress":
            raise trial.fail(
                f"{path}: task {task_id} stranded in_progress (assignee {entry.get('assignee')})"
            )
    return tasks


def _attempts(trial: Trial, run_id: str) -> dict[str, list[TaskAttempt]]:
    """Every attempt the run recorded, by task (retries in the same run included)."""
    found: dict[str, list[TaskAttempt]] = {}
    tasks = trial.runs / run_id / "tasks"
    for path in sorted(tasks.glob("*/task.json")) + sorted(tasks.glob("*/attempt-*/task.json")):
        attempt = msgspec.json.decode(path.read_bytes(), type=TaskAttempt)
        found.setdefault(attempt.task_id, []).append(attempt)
    return found


def _check_finished_kept(
    trial: Trial,
    record: RunRecord,
    attempts: dict[str, list[TaskAttempt]],
    tasks: dict[str, dict[str, Any]],
) -> None:
    """0 finished tasks reopened: a task whose attempt succeeded is closed in the backlog, and
    the commit its agent made is on the run's branch."""
    committed = _branch_subjects(trial, record.branch)
    for task_id, recorded in attempts.items():
        if not any(a.outcome == "succeeded" for a in recorded):
            continue
        status = tasks.get(task_id, {}).get("status")
        if status != "closed":
            raise trial.fail(
                f"{task_id}: its attempt succeeded (run {record.run_id}) but the task is "
                f"{status!r}: a finished task was reopened"
            )
        made = [e for e in _report_entries(trial, task_id) if e.get("commit") == 0]
        if made and committed is not None and f"work {task_id}" not in committed:
            raise trial.fail(
                f"{task_id}: its agent committed and succeeded, but branch {record.branch} "
                "has no such commit"
            )


def _branch_subjects(trial: Trial, branch: str | None) -> set[str] | None:
    if branch is None:
        return None
    log = subprocess.run(
        ["git", "log", "--format=%s", branch, "--"],
        cwd=trial.project,
        capture_output=True,
        text=True,
    )
    if log.returncode != 0:
        raise trial.fail(f"the run's branch {branch} cannot be read: {log.stderr.strip()}")
    return set(log.stdout.splitlines())


def _report_entries(trial: Trial, task_id: str) -> list[dict[str, Any]]:
    """What the agents of ``task_id`` wrote to their side file, in order (every attempt's)."""
    path = trial.root / "reports" / f"{task_id}.jsonl"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # the last line, cut by a SIGKILL mid-write: nothing after it
    return entries


@dataclass
class _Reported:
    """What one task's agents told cub: ``done`` for certain, each of ``pending`` maybe (its
    agent was SIGKILLed between writing it down and knowing it was written to cub)."""

    done: tuple[int, int, float] = (0, 0, 0.0)
    pending: list[tuple[int, int, float]] = field(default_factory=list)
    lines: int = 0

    def possible(self) -> list[tuple[int, int, float]]:
        sums = []
        for size in range(len(self.pending) + 1):
            for chosen in itertools.combinations(self.pending, size):
                sums.append(_add(self.done, *chosen))
        return sums

    def most(self) -> tuple[int, int, float]:
        return _add(self.done, *self.pending)


def _add(*figures: tuple[int, int, float]) -> tuple[int, int, float]:
    return (
        sum(f[0] for f in figures),
        sum(f[1] for f in figures),
        sum(f[2] for f in figures),
    )


def _reported(trial: Trial, task_id: str) -> _Reported:
    reported = _Reported()
    waiting: tuple[int, int, float] | None = None
    for entry in _report_entries(trial, task_id):
        if "start" in entry and waiting is not None:
            reported.pending.append(waiting)  # the previous agent was killed in between
            waiting = None
        if "pending" in entry:
            tokens_in, tokens_out, cost = entry["pending"]
            waiting = (int(tokens_in), int(tokens_out), float(cost))
            reported.lines += 1
        elif entry.get("done") and waiting is not None:
            reported.done = _add(reported.done, waiting)
            waiting = None
    if waiting is not None:
        reported.pending.append(waiting)
    return reported


def _recorded(attempts: list[TaskAttempt]) -> tuple[int, int, float]:
    return _add(
        *((a.usage.input_tokens, a.usage.output_tokens, a.usage.cost_usd or 0.0) for a in attempts)
    )


def _same(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    return a[0] == b[0] and a[1] == b[1] and math.isclose(a[2], b[2], abs_tol=1e-9)


def _check_usage(trial: Trial, record: RunRecord, attempts: dict[str, list[TaskAttempt]]) -> None:
    """Recorded usage = agent-reported usage: each task's attempts add up to what its agents
    reported, and the run's totals to its attempts'. Only where cub itself was SIGKILLed is
    less allowed: the attempt recovery records for the agent it was running has no usage."""
    total = (0, 0, 0.0)
    for task_id in trial.plan:
        reported = _reported(trial, task_id)
        recorded = _recorded(attempts.get(task_id, []))
        total = _add(total, recorded)
        lost = record.recorded_by == "recovery" and any(
            a.outcome == "killed" for a in attempts.get(task_id, [])
        )
        if reported.lines and task_id not in attempts and not lost:
            if record.recorded_by == "recovery":
                continue  # cub was killed as it started this agent: nothing of it recorded
            raise trial.fail(f"{task_id}: its agent reported usage, the run has no attempt of it")
        if lost:
            most = reported.most()
            if recorded[0] > most[0] or recorded[1] > most[1]:
                raise trial.fail(
                    f"{task_id}: recorded usage {recorded} is more than its agent reported ({most})"
                )
            continue
        if not any(_same(recorded, possible) for possible in reported.possible()):
            raise trial.fail(
                f"{task_id}: recorded usage (input, output, cost) {recorded} is not what its "
                f"agent reported: {reported.done}"
                + (f" plus maybe some of {reported.pending}" if reported.pending else "")
            )
    budget = record.budget
    tokens = total[0] + total[1]
    if record.recorded_by == "machine":
        cost_matches = (budget.cost_usd is None and total[2] == 0) or (
            budget.cost_usd is not None and math.isclose(budget.cost_usd, total[2], abs_tol=1e-9)
        )
        if budget.tokens_used != tokens or not cost_matches:
            raise trial.fail(
                f"run.json counts {budget.tokens_used} tokens and ${budget.cost_usd}; its "
                f"attempts add up to {tokens} tokens and ${total[2]:.5f}"
            )
    else:
        told = sum(_tokens(list(_reported(trial, t).most())) for t in trial.plan)
        if budget.tokens_used > told:
            raise trial.fail(
                f"run.json counts {budget.tokens_used} tokens; the agents reported {told}"
            )


def _check_lock_deleter(trial: Trial, records: list[RunRecord]) -> None:
    """An agent that deleted every *.lock and asked `cub status` did not make its live run
    look dead: that status recovered nothing, and the run was recorded by cub itself."""
    if trial.options.lock_task is None:
        return
    for entry in _report_entries(trial, trial.options.lock_task):
        if "locks_deleted" not in entry:
            continue
        if trial.killed_at is not None and trial.killed_at < entry["answered_at"]:
            continue  # cub was SIGKILLed before that status answered: the run may be dead
        said = entry["status_out"] + entry["status_err"]
        if "recovered run" in said or "runner_died" in said or "Traceback" in said:
            raise trial.fail(
                f"`cub status` from the agent of {trial.options.lock_task}, after it deleted "
                f"{entry['locks_deleted']}, exited {entry['status_exit']} saying: {said!r}"
            )
        if entry["status_exit"] > 0:
            raise trial.fail(f"`cub status` from the agent exited {entry['status_exit']}: {said!r}")


def _check_natural(trial: Trial, records: list[RunRecord]) -> None:
    """No signal: the run ends as its plan says it must."""
    if len(records) != 1:
        raise trial.fail(f"expected exactly one run, found {len(records)}")
    record = records[0]
    if record.recorded_by != "machine" or trial.returncode != record.exit_code:
        raise trial.fail(
            f"cub exited {trial.returncode}; its record says {record.exit_code} "
            f"({record.state}, by {record.recorded_by})"
        )
    expected = _predicted_endings(trial)
    ending = (record.state, record.reason_code)
    if ending not in expected:
        raise trial.fail(f"ended {ending}; the plan says {sorted(expected)}")
    for task_id, recorded in _attempts(trial, record.run_id).items():
        # Only the budget stops an agent here; one that then fails was cut short, as far as
        # cub can tell (it exits non-zero after the stop signal).
        stoppable = task_id == trial.options.budget_task and trial.plan[task_id]["exit"] != 0
        for attempt in recorded:
            if attempt.outcome not in ("succeeded", "failed") and not stoppable:
                raise trial.fail(f"{task_id}: attempt {attempt.outcome} in a run nobody stopped")


def _predicted_endings(trial: Trial) -> set[tuple[str, str]]:
    """The tasks run in order; the first that changes the task file or crosses the budget ends
    the run, else it ends with its backlog: failed when a task failed, else completed."""
    options = trial.options
    for task_id in trial.plan:
        if task_id == options.tamper_task:
            return {_TAMPER_ENDING}
        if task_id == options.budget_task:
            return {_BUDGET_ENDING}
    if any(agent["exit"] for agent in trial.plan.values()):
        return {("failed", "tasks_failed")}
    return {("completed", "all_tasks_done"), ("completed", "no_ready_tasks")}


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
    elif interrupted or ending not in _unsignalled_endings(trial):
        raise trial.fail(f"unexpected ending {ending} (interrupt in history: {interrupted})")
    for attempt_file in (trial.runs / record.run_id / "tasks").glob("*/task.json"):
        attempt = msgspec.json.decode(attempt_file.read_bytes(), type=TaskAttempt)
        if record.state == "interrupted" and attempt.outcome == "killed":
            raise trial.fail(f"{attempt_file}: attempt killed in an orderly stop")


def _unsignalled_endings(trial: Trial) -> set[tuple[str, str]]:
    """How a run may end before a signal reaches it."""
    endings = set(_NATURAL_ENDINGS)
    if trial.options.budget_tokens is not None:
        endings.add(_BUDGET_ENDING)
    if trial.tampered is not None:
        endings.add(_TAMPER_ENDING)
    return endings


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
    # How many trials drew each of issue 13's behaviours (see `_features`).
    features: dict[str, int] = field(default_factory=dict)
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

    def one(seed: int) -> tuple[int, str | None, str | None, list[str]]:
        if stop_after is not None and len(summary.failures) >= stop_after:
            return seed, None, "skipped", []
        try:
            trial = run_trial(kind, seed, base)
        except TrialFailed as exc:
            return seed, str(exc), None, []
        ending, features = _ending_of(trial), _features(trial)
        if not keep:
            shutil.rmtree(trial.root, ignore_errors=True)
        return seed, None, ending, features

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _seed, failure, ending, features in pool.map(one, seeds):
            if ending == "skipped":
                continue
            summary.trials += 1
            if failure is not None:
                summary.failures.append(failure)
            elif ending is not None:
                summary.endings[ending] = summary.endings.get(ending, 0) + 1
            for feature in features:
                summary.features[feature] = summary.features.get(feature, 0) + 1
    summary.seconds = time.monotonic() - start
    return summary


def _ending_of(trial: Trial) -> str:
    if trial.run_id is None:
        return "no run"
    record = msgspec.json.decode(
        (trial.runs / trial.run_id / "run.json").read_bytes(), type=RunRecord
    )
    who = "recovery" if record.recorded_by == "recovery" else "cub"
    return f"{record.state} ({record.reason_code}, by {who})"


def _features(trial: Trial) -> list[str]:
    """Which of issue 13's behaviours the trial really went through (not only drew)."""
    options, features = trial.options, []
    if options.in_place:
        features.append("in_place")
    if options.budget_tokens is not None:
        features.append("budget")
    if options.close_stdout_after is not None:
        features.append("stdout_closed")
    if trial.tampered is not None:
        features.append(
            {"delete": "task_file_deleted", "corrupt": "task_file_corrupted"}[trial.tampered]
        )
    if options.lock_task is not None and any(
        "locks_deleted" in e for e in _report_entries(trial, options.lock_task)
    ):
        features.append("locks_deleted")
    return features


# ----------------------------------------------------------------- what a dead runner leaves


def orphaned_run(project: Path, run_id: str, triggers: tuple[str, ...] = ()) -> Path:
    """A run as a runner that died leaves it: created through cub's own store and machine,
    moved along ``triggers``, then its runner lock let go (as the kernel does when the runner
    dies). Its status.json names a runner process that has exited, as a dead runner's does."""
    from cub.records.store import unlock_run
    from tests.helpers.machines import new_machine

    machine = new_machine(project, run_id, argv=("run", "--orphaned"))
    for trigger in triggers:
        getattr(machine, trigger)()
    store = machine.ctx.store
    assert store is not None and store.runner_lock is not None
    unlock_run(store.runner_lock)
    status_path = store.run_dir / "status.json"
    status = msgspec.json.decode(status_path.read_bytes(), type=StatusRecord)
    dead = msgspec.structs.replace(status, runner=dead_runner(status.runner.host))
    status_path.write_bytes(msgspec.json.encode(dead))
    return store.run_dir


def dead_runner(host: str) -> Any:
    """A RunnerInfo naming a process that has exited (its pid and its real start time)."""
    from cub.records.schemas import RunnerInfo

    proc = subprocess.Popen(["true"])
    create_time = psutil.Process(proc.pid).create_time()  # a zombie still has it
    proc.wait()
    return RunnerInfo(pid=proc.pid, create_time=create_time, host=host)


def orphaned_runs(project: Path, count: int) -> list[Path]:
    """``count`` runs whose runners died while selecting their first task."""
    return [
        orphaned_run(project, f"orphan-{i:03d}", ("validate", "accept", "prepared"))
        for i in range(count)
    ]
