"""Ctrl+C, SIGTERM and SIGHUP sent to the real `cub run` process, with real scripted agents.

cub runs in its own session (`start_cub`), so the signal goes to cub alone, as a terminal's
Ctrl+C would go to cub's foreground group while the agent sits in a session of its own. Agents
carry a per-test token in their environment (inherited from cub's), so anything of theirs left
running afterwards is found with psutil, even a grandchild that escaped with setsid().
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cub.lifecycle.signals import SAME_REQUEST_WINDOW
from cub.records.location import runs_dir
from cub.records.schemas import RunRecord
from tests.e2e.support import command_harness
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    is_alive,
    processes_with_token,
    sleeping_agent,
    stubborn_agent,
    wait_for_file,
    wait_until,
    write_script,
)
from tests.helpers.cli import (
    make_project,
    read_attempt,
    read_events,
    read_run,
    read_status,
    read_tasks,
    start_cub,
    task,
)
from tests.helpers.faults import orphaned_runs
from tests.helpers.git import git

pytestmark = pytest.mark.timeout(60)


class Cub:
    """A `cub run` started in the background, with the token its agents will carry."""

    def __init__(self, project: Path, args: list[str]) -> None:
        self.project = project
        self.token = uuid.uuid4().hex
        self.proc = start_cub(["run", *args], project, env={TEST_TOKEN_VAR: self.token})
        self.stdout = ""
        self.stderr = ""

    def send(self, sig: int) -> float:
        os.kill(self.proc.pid, sig)
        return time.monotonic()

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for cub to exit; returns its exit code. Output is collected as it goes."""
        self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    def exit_latency(self, since: float, timeout: float = 30.0) -> float:
        """Seconds from ``since`` until cub exited."""
        self.wait(timeout)
        return time.monotonic() - since

    def assert_clean_exit(self) -> None:
        assert "Traceback" not in self.stderr + self.stdout, self.stderr
        left = processes_with_token(self.token)
        assert not left, f"agent processes outlived cub: {[p.cmdline() for p in left]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        for proc in processes_with_token(self.token):
            proc.kill()


@pytest.fixture
def cubs() -> Any:
    """Every `Cub` a test starts is stopped, and its agents killed, however the test ends."""
    started: list[Cub] = []

    def start(project: Path, *args: str) -> Cub:
        cub = Cub(project, list(args))
        started.append(cub)
        return cub

    yield start
    for cub in started:
        cub.kill()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj", [task("t1"), task("t2")])


def signal_pending(pid: int, sig: int) -> bool:
    """Whether ``sig`` is still waiting to be delivered to process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [
        line.split()[1] for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd"))
    ]
    return any(int(mask, 16) >> (sig - 1) & 1 for mask in masks)


def set_config(project: Path, config: dict[str, Any]) -> None:
    (project / ".cub" / "config.json").write_text(json.dumps(config))


def recording_hook(project: Path, point: str, out: Path) -> None:
    """A hook that appends what it was told (outcome, run state) to ``out``."""
    hooks = project / ".cub" / "hooks" / f"{point}.d"
    hooks.mkdir(parents=True, exist_ok=True)
    write_script(
        hooks / "10-record",
        f"""#!/bin/sh
echo "{point} task=$CUB_TASK_ID outcome=$CUB_TASK_OUTCOME state=$CUB_RUN_STATE" >> {out}
""",
    )


def signal_logging_agent(path: Path, ready: Path, log: Path, *, exits_on: tuple[str, ...]) -> Path:
    """Logs every SIGINT/SIGTERM/SIGHUP it gets to ``log``; exits 128+n on those in
    ``exits_on`` and ignores the others. Touches ``ready`` once its handlers are in place."""
    return write_script(
        path,
        f"""
import os, signal, sys, time
EXITS = {exits_on!r}
def handle(signum, frame):
    name = signal.Signals(signum).name
    with open({str(log)!r}, "a") as f:
        f.write(name + "\\n")
    if name in EXITS:
        os._exit(128 + signum)
for name in ("SIGINT", "SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), handle)
print("agent started", flush=True)
open({str(ready)!r}, "w").close()
while True:
    print("working", flush=True)
    time.sleep(0.05)
""",
    )


def triggers(record: RunRecord) -> list[str]:
    return [t.trigger for t in record.history]


def after_the_same_request_window() -> None:
    """Wait long enough after the first signal was handled that the next is a second request,
    not the first one delivered twice (`cub.lifecycle.signals`)."""
    time.sleep(SAME_REQUEST_WINDOW + 0.1)


def assert_released(project: Path, task_id: str) -> None:
    entry = read_tasks(project)[task_id]
    assert entry["status"] == "open", entry
    assert entry.get("assignee") is None, entry


# ------------------------------------------------------------------------- the first signal


def test_first_sigint_stops_the_agent_and_releases_its_task(
    project: Path, bin_dir: Path, cubs: Any
) -> None:
    ready, log, hooks_out = bin_dir / "ready", bin_dir / "signals", bin_dir / "hooks"
    agent = signal_logging_agent(bin_dir / "agent", ready, log, exits_on=("SIGINT",))
    recording_hook(project, "post-task", hooks_out)
    recording_hook(project, "post-loop", hooks_out)
    cub = cubs(project, *command_harness(agent))
    wait_for_file(ready)

    latency = cub.exit_latency(cub.send(signal.SIGINT))

    assert cub.proc.returncode == 130, cub.stderr
    assert latency < 5
    cub.assert_clean_exit()
    assert log.read_text().split() == ["SIGINT"]  # its group got SIGINT, once
    record = read_run(project)
    assert (record.state, record.exit_code, record.reason_code) == ("interrupted", 130, "sigint")
    assert record.recorded_by == "machine"
    assert triggers(record)[-2:] == ["interrupt", "stopped"]
    assert record.history[-2].from_ == "executing"
    assert (record.tasks.interrupted, record.tasks.succeeded) == (1, 0)
    attempt = read_attempt(project, "t1")
    assert attempt.outcome == "interrupted"
    assert attempt.exit_code == 128 + signal.SIGINT
    assert_released(project, "t1")
    assert read_tasks(project)["t2"].get("attempts") is None  # never started
    assert read_status(project).state == "interrupted"
    assert read_status(project).current_task is None
    assert hooks_out.read_text().splitlines() == [
        "post-task task=t1 outcome=interrupted state=",
        "post-loop task= outcome= state=interrupted",
    ]
    assert "cub: interrupted (exit 130)" in cub.stdout


def test_what_the_agent_prints_while_it_stops_is_counted_and_the_attempt_given_back(
    project: Path, bin_dir: Path, cubs: Any
) -> None:
    """An agent reports its true usage on the way out (as Claude Code's final result does):
    it counts. And an attempt cub cut short does not use up one of the task's attempts."""
    ready = bin_dir / "ready"
    agent = write_script(
        bin_dir / "agent",
        f"""
import signal, sys, time
def stop(*_):
    time.sleep(0.5)  # winding down takes a moment
    print('{{"cub_usage": {{"input_tokens": 900, "output_tokens": 100, "cost_usd": 0.5}}}}',
          flush=True)
    sys.exit(1)
signal.signal(signal.SIGINT, stop)
print('{{"cub_usage": {{"input_tokens": 10, "output_tokens": 5}}}}', flush=True)
open({str(ready)!r}, "w").close()
time.sleep(60)
""",
    )
    cub = cubs(project, *command_harness(agent), "--on-failure", "retry")
    wait_for_file(ready)
    cub.send(signal.SIGINT)

    assert cub.wait() == 130, cub.stderr
    cub.assert_clean_exit()
    usage = read_attempt(project, "t1").usage
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (910, 105, 0.5)
    record = read_run(project)
    assert (record.budget.tokens_used, record.budget.cost_usd) == (1015, 0.5)
    assert read_tasks(project)["t1"]["attempts"] == 0
    signalled = [e.data for e in read_events(project) if e.kind == "agent_signalled"]
    assert [(d["signal"], d["to"]) for d in signalled] == [("SIGINT", "tree")]


@pytest.mark.parametrize(("sig", "word"), [(signal.SIGTERM, "sigterm"), (signal.SIGHUP, "sighup")])
def test_sigterm_and_sighup_stop_the_run_with_143(
    project: Path, bin_dir: Path, cubs: Any, sig: int, word: str
) -> None:
    ready, log = bin_dir / "ready", bin_dir / "signals"
    agent = signal_logging_agent(bin_dir / "agent", ready, log, exits_on=("SIGTERM",))
    cub = cubs(project, *command_harness(agent))
    wait_for_file(ready)

    cub.send(sig)

    assert cub.wait() == 143, cub.stderr
    cub.assert_clean_exit()
    assert log.read_text().split() == ["SIGTERM"]  # the agent is asked with SIGTERM
    record = read_run(project)
    assert (record.state, record.exit_code, record.reason_code) == ("interrupted", 143, word)
    assert read_attempt(project, "t1").outcome == "interrupted"
    assert_released(project, "t1")


def test_an_agent_ignoring_the_signal_gets_sigterm_after_the_grace_then_sigkill(
    project: Path, bin_dir: Path, cubs: Any
) -> None:
    ready, log, grandchild = bin_dir / "ready", bin_dir / "signals", bin_dir / "grandchild"
    agent = write_script(
        bin_dir / "agent",
        f"""
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    open({str(grandchild)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
    os._exit(0)
def handle(signum, frame):
    with open({str(log)!r}, "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
signal.signal(signal.SIGINT, handle)
signal.signal(signal.SIGTERM, handle)
while not os.path.exists({str(grandchild)!r}):
    time.sleep(0.01)
open({str(ready)!r}, "w").close()
while True:
    time.sleep(0.05)
""",
    )
    cub = cubs(project, *command_harness(agent), "--grace", "1s")
    wait_for_file(ready)
    grandchild_pid = int(grandchild.read_text())

    latency = cub.exit_latency(cub.send(signal.SIGINT))

    assert cub.wait() == 130, cub.stderr
    # SIGINT, 1 s of grace, SIGTERM, 2 s more, then SIGKILL for the whole tree.
    assert 2.8 < latency < 8, latency
    assert log.read_text().split() == ["SIGINT", "SIGTERM"]
    assert not is_alive(grandchild_pid)
    cub.assert_clean_exit()
    record = read_run(project)
    assert (record.state, record.reason_code) == ("interrupted", "sigint")
    attempt = read_attempt(project, "t1")
    assert (attempt.outcome, attempt.signal) == ("interrupted", signal.SIGKILL)
    assert_released(project, "t1")


# ------------------------------------------------------------------------ the second signal


def test_second_sigint_kills_the_whole_tree_within_a_second(
    project: Path, bin_dir: Path, cubs: Any
) -> None:
    ready, grandchild = bin_dir / "ready", bin_dir / "grandchild"
    agent = stubborn_agent(bin_dir / "agent", ready, grandchild)
    cub = cubs(project, *command_harness(agent))  # default grace: 10 s
    wait_for_file(ready)
    grandchild_pid = int(grandchild.read_text())

    cub.send(signal.SIGINT)
    wait_until(lambda: read_status(project).state == "stopping", what="state stopping")
    after_the_same_request_window()
    latency = cub.exit_latency(cub.send(signal.SIGINT))

    assert cub.proc.returncode == 137, cub.stderr
    assert latency < 1.0, f"force kill took {latency:.2f}s"
    assert not is_alive(grandchild_pid)
    cub.assert_clean_exit()
    record = read_run(project)
    assert (record.state, record.exit_code, record.reason_code) == (
        "force_killed",
        137,
        "second_interrupt",
    )
    assert triggers(record)[-2:] == ["interrupt", "force_kill"]
    attempt = read_attempt(project, "t1")
    assert (attempt.outcome, attempt.signal) == ("killed", signal.SIGKILL)
    assert_released(project, "t1")
    assert read_status(project).state == "force_killed"
    events = read_events(project)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_second_signal_during_the_post_loop_hook(project: Path, bin_dir: Path, cubs: Any) -> None:
    """The second Ctrl+C lands while the orderly stop runs its hooks: killed at once, and the
    record is still complete."""
    ready, hook_ready, hook_pid = bin_dir / "ready", bin_dir / "hook-ready", bin_dir / "hook-pid"
    agent = sleeping_agent(bin_dir / "agent", ready, exit_on_sigint=130)
    hooks = project / ".cub" / "hooks" / "post-loop.d"
    hooks.mkdir(parents=True)
    write_script(
        hooks / "10-slow",
        f"""#!/bin/sh
echo $$ > {hook_pid}
touch {hook_ready}
exec sleep 30
""",
    )
    cub = cubs(project, *command_harness(agent))
    wait_for_file(ready)
    cub.send(signal.SIGINT)
    wait_for_file(hook_ready)
    after_the_same_request_window()

    latency = cub.exit_latency(cub.send(signal.SIGINT))

    assert cub.proc.returncode == 137, cub.stderr
    assert latency < 1.0, f"force kill took {latency:.2f}s"
    assert not is_alive(int(hook_pid.read_text()))
    cub.assert_clean_exit()
    record = read_run(project)
    assert (record.state, record.reason_code) == ("force_killed", "second_interrupt")
    assert record.history[-1].from_ == "stopping"
    assert read_attempt(project, "t1").outcome == "interrupted"  # recorded before the hook
    assert_released(project, "t1")


# -------------------------------------------------------------- loop.on_interrupt: finish


def test_on_interrupt_finish_lets_the_attempt_finish(
    project: Path, bin_dir: Path, cubs: Any
) -> None:
    set_config(project, {"loop": {"on_interrupt": "finish"}})
    ready = bin_dir / "ready"
    agent = write_script(
        bin_dir / "agent",
        f"""
import time
print("working", flush=True)
open({str(ready)!r}, "w").close()
time.sleep(1.0)
print("done", flush=True)
""",
    )
    cub = cubs(project, *command_harness(agent))
    wait_for_file(ready)

    cub.send(signal.SIGINT)

    assert cub.wait() == 130, cub.stderr
    cub.assert_clean_exit()
    record = read_run(project)
    assert (record.state, record.reason_code) == ("interrupted", "sigint")
    assert read_attempt(project, "t1").outcome == "succeeded"
    tasks = read_tasks(project)
    assert tasks["t1"]["status"] == "closed"
    assert tasks["t2"]["status"] == "open" and tasks["t2"].get("attempts") is None


def test_on_interrupt_finish_force_kills_when_the_grace_runs_out(
    project: Path, bin_dir: Path, cubs: Any
) -> None:
    set_config(project, {"loop": {"on_interrupt": "finish"}})
    ready = bin_dir / "ready"
    agent = sleeping_agent(bin_dir / "agent", ready, ignore=("SIGINT", "SIGTERM"))
    cub = cubs(project, *command_harness(agent), "--grace", "1s")
    wait_for_file(ready)

    latency = cub.exit_latency(cub.send(signal.SIGINT))

    assert cub.proc.returncode == 137, cub.stderr
    assert 0.9 < latency < 3, latency
    cub.assert_clean_exit()
    record = read_run(project)
    assert (record.state, record.reason_code) == ("force_killed", "grace_expired")
    assert read_attempt(project, "t1").outcome == "killed"
    assert_released(project, "t1")


def test_on_interrupt_finish_second_sigint_kills_at_once(
    project: Path, bin_dir: Path, cubs: Any
) -> None:
    set_config(project, {"loop": {"on_interrupt": "finish"}})
    ready = bin_dir / "ready"
    agent = sleeping_agent(bin_dir / "agent", ready)
    cub = cubs(project, *command_harness(agent))
    wait_for_file(ready)
    cub.send(signal.SIGINT)
    wait_until(lambda: read_status(project).state == "stopping", what="state stopping")
    after_the_same_request_window()

    latency = cub.exit_latency(cub.send(signal.SIGINT))

    assert cub.proc.returncode == 137
    assert latency < 1.0, latency
    cub.assert_clean_exit()
    assert read_run(project).reason_code == "second_interrupt"
    assert_released(project, "t1")


# ------------------------------------------------------------------- before the loop starts


@pytest.mark.parametrize(
    ("signals", "state", "code", "reason_code"),
    [
        ((signal.SIGINT,), "interrupted", 130, "sigint"),
        ((signal.SIGTERM,), "interrupted", 143, "sigterm"),
        ((signal.SIGINT, signal.SIGINT), "force_killed", 137, "second_interrupt"),
    ],
    ids=["sigint", "sigterm", "double-sigint"],
)
def test_signal_during_a_slow_pre_loop_hook(
    project: Path,
    bin_dir: Path,
    cubs: Any,
    signals: tuple[int, ...],
    state: str,
    code: int,
    reason_code: str,
) -> None:
    ready, agent_ran = bin_dir / "ready", bin_dir / "agent-ran"
    hooks = project / ".cub" / "hooks" / "pre-loop.d"
    hooks.mkdir(parents=True)
    # Two signals: the hook ignores the first one's SIGTERM, so the run is still stopping (for
    # the hooks' 2 s kill grace) when the second one comes.
    trap = "trap '' INT TERM HUP\n" if len(signals) > 1 else ""
    write_script(hooks / "10-slow", f"#!/bin/sh\n{trap}touch {ready}\nexec sleep 30\n")
    agent = write_script(bin_dir / "agent", f"open({str(agent_ran)!r}, 'w').close()\n")
    cub = cubs(project, *command_harness(agent))
    wait_for_file(ready)

    for i, sig in enumerate(signals):
        if i:
            time.sleep(SAME_REQUEST_WINDOW + 0.2)  # a second request, not one delivered twice
        sent = cub.send(sig)
    latency = cub.exit_latency(sent)

    assert cub.proc.returncode == code, cub.stderr
    if state == "force_killed":
        assert latency < 1.0, latency  # the hook's group is killed, not waited for
    else:
        assert latency < 5.0, latency  # the first signal stops the hook, not its 30 s sleep
    cub.assert_clean_exit()
    record = read_run(project)
    assert (record.state, record.exit_code, record.reason_code) == (state, code, reason_code)
    assert record.recorded_by == "machine"
    assert record.history[-1].from_ in ("preparing", "stopping")
    assert not agent_ran.exists()
    assert all(t["status"] == "open" for t in read_tasks(project).values())


def test_signal_while_the_run_branch_is_created(project: Path, bin_dir: Path, cubs: Any) -> None:
    ready = bin_dir / "ready"
    git_hook = project / ".git" / "hooks" / "post-checkout"
    write_script(git_hook, f"#!/bin/sh\ntouch {ready}\nsleep 1\n")
    agent = write_script(bin_dir / "agent", "print('should not run')\n")
    cub = cubs(project, *command_harness(agent))
    wait_for_file(ready)

    cub.send(signal.SIGTERM)

    assert cub.wait() == 143, cub.stderr
    cub.assert_clean_exit()
    record = read_run(project)
    assert (record.state, record.reason_code) == ("interrupted", "sigterm")
    assert "before any task started" in record.reason
    # The run's branch was made (in its worktree: git ran the hook there); the checkout stays.
    assert record.branch is not None and record.branch.startswith("cub/")
    assert git(project, "branch", "--list", record.branch)
    assert git(project, "branch", "--show-current") == "main"


@pytest.mark.parametrize(
    ("signals", "state", "code"),
    [
        ((signal.SIGINT,), "interrupted", 130),
        ((signal.SIGHUP,), "interrupted", 143),
        ((signal.SIGINT, signal.SIGINT), "force_killed", 137),
    ],
    ids=["sigint", "sighup", "double-sigint"],
)
def test_signal_while_cub_recovers_old_runs(
    project: Path, cubs: Any, signals: tuple[int, ...], state: str, code: int
) -> None:
    """Before the run has a directory of its own: cub is still finalising runs whose runners
    died. The signal is kept, the recovery finishes, and the new run records the signal.

    Between signals cub is stopped (SIGSTOP), so the recovery cannot end in the pause however
    fast this machine is, while cub's clock still sees a second request, not a copy."""
    orphans = orphaned_runs(project, 100)
    cub = cubs(project, *command_harness("true"))
    done = [run / "run.json" for run in orphans]
    wait_until(lambda: any(p.exists() for p in done), what="recovery under way")
    first, *second = signals
    cub.send(first)
    wait_until(lambda: not signal_pending(cub.proc.pid, first), what="signal taken")
    time.sleep(0.1)  # Python runs its handler at the main thread's next bytecode
    os.kill(cub.proc.pid, signal.SIGSTOP)
    assert not all(p.exists() for p in done), "recovery ended before the signal"
    if second:
        time.sleep(SAME_REQUEST_WINDOW + 0.2)  # a second request, not one delivered twice
        cub.send(second[0])
    os.kill(cub.proc.pid, signal.SIGCONT)

    assert cub.wait() == code, cub.stderr
    cub.assert_clean_exit()
    assert all(p.exists() for p in done)
    record = read_run(project)
    assert (record.state, record.exit_code) == (state, code)
    assert record.run_id not in {run.name for run in orphans}
    assert record.tasks.attempted == []


# ----------------------------------------------------------------------------- no orphans


@pytest.mark.parametrize("ending", ["completed", "failed", "timed_out"])
def test_no_agent_process_outlives_cub(
    project: Path, bin_dir: Path, cubs: Any, ending: str
) -> None:
    """An agent that leaves a setsid() grandchild behind (ignoring signals, holding nothing of
    cub's): whichever way the run ends, the grandchild is gone when cub exits."""
    grandchild = bin_dir / "grandchild"
    body = {
        "completed": "sys.exit(0)",
        "failed": "sys.exit(3)",
        "timed_out": "time.sleep(60)",
    }[ending]
    agent = write_script(
        bin_dir / "agent",
        f"""
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    open({str(grandchild)!r} + ".tmp", "w").write(str(os.getpid()))
    os.rename({str(grandchild)!r} + ".tmp", {str(grandchild)!r})
    time.sleep(60)
    os._exit(0)
while not os.path.exists({str(grandchild)!r}):
    time.sleep(0.01)
print("working", flush=True)
{body}
""",
    )
    cub = cubs(project, *command_harness(agent), "--once", "--task-timeout", "1s")

    code = cub.wait()

    assert code == {"completed": 0, "failed": 1, "timed_out": 1}[ending], cub.stdout
    assert not is_alive(int(grandchild.read_text()))
    cub.assert_clean_exit()
    outcome = {"completed": "succeeded", "failed": "failed", "timed_out": "timed_out"}[ending]
    assert read_attempt(project, "t1").outcome == outcome


def test_signals_after_the_record_is_written_change_nothing(tmp_path: Path, bin_dir: Path) -> None:
    """Signals that arrive once run.json is written, while cub prints and exits: no second run,
    no KeyboardInterrupt on the way out, the run's own exit code."""
    project = make_project(tmp_path / "proj", [task(f"t{i}") for i in range(6)])
    agent = write_script(bin_dir / "agent", "print('done')\n")
    for attempt in range(6):
        name = f"late-{attempt}"
        proc = start_cub(["run", *command_harness(agent), "--once", "--name", name], project)
        run_json = runs_dir(project) / name / "run.json"
        deadline = time.monotonic() + 20
        while not run_json.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        sig = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)[attempt % 3]
        while proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            time.sleep(0.001)
        out, err = proc.communicate()
        assert "Traceback" not in err, err
        record = read_run(project, name)
        assert (proc.returncode, record.state) == (0, "completed"), (out, err)
        git(project, "switch", "-q", "main")
    runs = [p for p in runs_dir(project).iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 6


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.02, 0.03, 0.06, 0.09, 0.12])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_cli_starts_up_is_a_recorded_interruption(
    project: Path, bin_dir: Path, delay: float, signum: int
) -> None:
    """From the moment `cub run`'s entry module runs, a signal is the run's interruption:
    never a traceback, never an unrecorded death. (Before that, Python itself is starting and
    the signal's default action applies; then no run directory exists either.)"""
    agent = write_script(bin_dir / "agent", "print('should not run')\n")
    proc = start_cub(["run", *command_harness(agent)], project)
    time.sleep(delay)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    runs = runs_dir(project)
    # Python itself was still starting (on a loaded machine the delay can land there): its
    # default action, or its own "init_import_site" failure, and no cub code ran.
    python_starting = err.startswith("Fatal Python error: init_import_site")
    if proc.returncode == -signum or python_starting:
        assert not runs.exists() or not any(runs.iterdir())
        return
    assert "Traceback" not in err, err
    assert proc.returncode == (130 if signum == signal.SIGINT else 143), (out, err)
    record = read_run(project)
    assert record.state == "interrupted"
    assert record.exit_code == proc.returncode
    assert read_tasks(project)["t1"]["status"] == "open"
