"""The agent supervisor, driven with real misbehaving agent scripts."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cub.agents.output import Assembled, LineAssembler
from cub.agents.supervisor import AgentProcess, AgentRequest
from cub.processes import become_subreaper, kill_process_tree, process_matches
from cub.records.redact import Redactor
from tests.helpers.agents import (
    TEST_TOKEN_VAR,
    agent_request,
    collect_lines,
    is_alive,
    orphaning_agent,
    processes_with_token,
    sleeping_agent,
    stubborn_agent,
    wait_for_file,
    wait_until,
    write_script,
)

SECRET = "sk-ABCDEFGHIJKLMNOPQRSTUV"


@pytest.fixture(autouse=True)
def no_leftover_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every process a test starts is gone (and reaped) when it ends, escapees included."""
    token = uuid.uuid4().hex
    monkeypatch.setenv(TEST_TOKEN_VAR, token)  # inherited by everything the test starts
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}

    def leftovers() -> list[psutil.Process]:
        children = [p for p in me.children(recursive=True) if p.pid not in before]
        return children + [p for p in processes_with_token(token) if p not in children]

    yield
    deadline = time.monotonic() + 3
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in left:  # clean up before failing, so one bad test doesn't poison the rest
        try:
            proc.kill()
            proc.wait(1)
        except psutil.Error:
            pass
    assert not left, f"processes left behind: {left}"


@pytest.fixture(params=[False, True], ids=["plain", "subreaper"])
def subreaper(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run the test with and without this process being a child subreaper."""
    if request.param:
        assert become_subreaper()
    try:
        yield request.param
    finally:
        if request.param:
            become_subreaper(False)


def read_log(tmp_path: Path) -> str:
    # Bytes, not read_text(): universal newlines would hide a "\r\n".
    return (tmp_path / "harness.log").read_bytes().decode()


# ---------------------------------------------------------------------------- output


@pytest.mark.timeout(30)
def test_output_reaches_the_log_while_the_agent_runs(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = sleeping_agent(tmp_path / "agent", ready)
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        wait_until(lambda: "agent started\n" in read_log(tmp_path), what="line in harness.log")
        assert agent.returncode is None
        assert agent.read_lines(5) == ["agent started"]
        assert agent.last_output_at > agent.started_at
    agent.close()  # idempotent
    assert not is_alive(agent.pid)


@pytest.mark.timeout(30)
def test_a_line_without_newline_reaches_the_log_after_a_second(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = write_script(
        tmp_path / "agent",
        f"""
        import sys, time
        sys.stdout.write("progress 42%")
        sys.stdout.flush()
        open({str(ready)!r}, "w").close()
        time.sleep(60)
        """,
    )
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        wait_until(lambda: "progress 42%" in read_log(tmp_path), what="partial line in the log")
        assert agent.returncode is None
        assert agent.read_lines(0) == []  # not a complete line yet
    assert agent.read_lines(0) == ["progress 42%"]  # delivered once the output closed
    assert read_log(tmp_path) == "progress 42%"


@pytest.mark.timeout(30)
def test_read_lines_in_order_including_a_final_line_without_newline(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "agent",
        r"""
        import sys
        sys.stdout.write("one\ntwo\r\n")
        sys.stdout.flush()
        sys.stderr.write("three\n")
        sys.stderr.flush()
        sys.stdout.write("four")
        """,
    )
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        assert collect_lines(agent) == ["one", "two", "three", "four"]
        assert agent.returncode == 0
    assert read_log(tmp_path) == "one\ntwo\r\nthree\nfour"


@pytest.mark.timeout(30)
def test_megabytes_of_output_do_not_deadlock(tmp_path: Path) -> None:
    count = 52_429  # 100-byte lines: 5 MB
    script = write_script(
        tmp_path / "agent",
        f"""
        import sys
        out = sys.stdout.buffer
        for i in range({count}):
            out.write(b"%07d " % i + b"x" * 91 + b"\\n")
        """,
    )
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        # More than the line queue holds: the agent goes on as fast as the lines are taken.
        # (One that nobody reads for is held back, not buffered: tests/agents/test_output.py.)
        lines = collect_lines(agent)
    assert agent.returncode == 0
    assert len(lines) == count
    assert lines[0] == "0000000 " + "x" * 91
    assert lines[-1].startswith(f"{count - 1:07d} ")
    assert (tmp_path / "harness.log").stat().st_size == count * 100


@pytest.mark.timeout(30)
def test_stdin_reaches_the_agent(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "agent", "import sys\nprint(sys.stdin.read().upper(), end='')\n"
    )
    with AgentProcess.start(agent_request(tmp_path, script, stdin=b"do the task\n")) as agent:
        assert collect_lines(agent) == ["DO THE TASK"]


@pytest.mark.timeout(30)
def test_an_agent_that_never_reads_stdin_does_not_block_start(tmp_path: Path) -> None:
    go = tmp_path / "go"
    script = write_script(
        tmp_path / "agent",
        f"""
        import os, time
        print("waiting", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        """,
    )
    # Far more than a pipe holds: if start() wrote it itself, it would wait for `go` forever.
    request = agent_request(tmp_path, script, stdin=b"x" * (4 << 20))
    with AgentProcess.start(request) as agent:
        go.touch()
        assert collect_lines(agent) == ["waiting"]
        assert agent.returncode == 0


@pytest.mark.timeout(30)
def test_env_reaches_the_agent_and_the_request_repr_hides_it(tmp_path: Path) -> None:
    script = write_script(tmp_path / "agent", "import os\nprint(os.environ['AGENT_API_KEY'])\n")
    request = agent_request(
        tmp_path, script, env={"AGENT_API_KEY": "hunter2-value"}, stdin=b"the prompt"
    )
    text = repr(request)
    assert "hunter2-value" not in text
    assert "the prompt" not in text
    assert "values hidden" in text
    assert str(script) in text
    with AgentProcess.start(request) as agent:
        assert collect_lines(agent) == ["hunter2-value"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("chunks", [1, 2], ids=["one-chunk", "two-chunks"])
def test_secrets_are_masked_in_the_log_and_the_lines(tmp_path: Path, chunks: int) -> None:
    if chunks == 1:
        body = f"print('key={SECRET} done', flush=True)\n"
    else:
        body = (
            "import sys, time\n"
            f"sys.stdout.write('key={SECRET[:10]}'); sys.stdout.flush()\n"
            "time.sleep(0.1)\n"
            f"print('{SECRET[10:]} done', flush=True)\n"
        )
    script = write_script(tmp_path / "agent", body)
    request = agent_request(tmp_path, script, redact=Redactor())
    with AgentProcess.start(request) as agent:
        assert collect_lines(agent) == ["key=[REDACTED] done"]
    log = read_log(tmp_path)
    assert log == "key=[REDACTED] done\n"
    assert SECRET[:10] not in log


@pytest.mark.timeout(30)
def test_the_log_stops_at_its_cap_and_says_how_much_it_dropped(tmp_path: Path) -> None:
    line = "x" * 99  # 100 bytes with its newline
    script = write_script(
        tmp_path / "agent",
        f"""
        for n in range(50):
            print({line!r}, flush=True)
        print("é" * 10 + " the last line", flush=True)
        """,
    )
    request = AgentRequest(**{**vars(agent_request(tmp_path, script)), "log_max_bytes": 1050})
    with AgentProcess.start(request) as agent:
        lines = collect_lines(agent)
    # Everything was still read and handed on...
    assert lines == [line] * 50 + ["é" * 10 + " the last line"]
    total = 50 * 100 + len(("é" * 10 + " the last line\n").encode())
    # ...but the log kept only its first 1050 bytes, then says how much more there was.
    assert agent.log_dropped_bytes == total - 1050
    log = (tmp_path / "harness.log").read_bytes()
    kept, notice = log[:1050], log[1050:]
    assert kept == (line + "\n").encode() * 10 + b"x" * 50
    assert (
        notice
        == (
            f"\n[cub] harness.log reached its cap of 1050 bytes (loop.log_max_bytes): "
            f"{total - 1050} more bytes of output were not written\n"
        ).encode()
    )


@pytest.mark.timeout(30)
def test_the_log_cap_never_splits_a_character_and_no_cap_drops_nothing(tmp_path: Path) -> None:
    script = write_script(tmp_path / "agent", 'print("ab" + "é" * 5, flush=True)\n')
    capped = AgentRequest(**{**vars(agent_request(tmp_path, script)), "log_max_bytes": 4})
    with AgentProcess.start(capped) as agent:
        collect_lines(agent)
    log = (tmp_path / "harness.log").read_bytes()
    assert log.startswith("abé\n[cub]".encode())  # 4 bytes: "ab" and one whole "é"
    assert agent.log_dropped_bytes == len("ab" + "é" * 5 + "\n") + 5 - 4
    (tmp_path / "harness.log").unlink()
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        collect_lines(agent)
    assert agent.log_dropped_bytes == 0
    assert read_log(tmp_path) == "ab" + "é" * 5 + "\n"


# ------------------------------------------------ partial lines (pure logic, explicit clock)


def texts(piece: Assembled) -> tuple[str, str]:
    """(the lines for the caller, the text for the log) of one assembled chunk."""
    return piece.lines, piece.log


def test_partial_line_holds_back_the_token_being_written() -> None:
    lines = LineAssembler(Redactor(), partial_after=1.0)
    assert texts(lines.feed(b"progress sk-ABCDEFGHIJ", now=0.0)) == ("", "")
    assert lines.tick(0.5) == ""
    assert texts(lines.feed(b"KLMN", now=0.9)) == ("", "")
    assert lines.tick(1.2) == "progress "  # output still flowing: up to the last space only
    assert texts(lines.feed(b"OPQRSTUV\n", now=1.5)) == ("progress [REDACTED]\n", "[REDACTED]\n")


def test_partial_line_is_logged_whole_once_output_is_quiet() -> None:
    lines = LineAssembler(Redactor(), partial_after=1.0)
    lines.feed(b"50%", now=0.0)
    assert lines.tick(1.0) == "50%"
    lines.feed(b"\r60%", now=1.1)
    assert lines.tick(1.5) == ""
    assert lines.tick(2.0) == "\r"
    assert lines.tick(3.1) == "60%"
    assert texts(lines.finish()) == ("50%\r60%\n", "")


def test_partial_line_rewritten_when_more_context_reveals_a_secret() -> None:
    lines = LineAssembler(Redactor(), partial_after=1.0)
    lines.feed(b"Authorization: Bearer ", now=0.0)
    logged = lines.tick(1.0)
    assert logged == "Authorization: Bearer "
    out, more = texts(lines.feed(b"abcdefghijklmnopqrstuvwxyz0123\n", now=1.5))
    assert out == "Authorization: [REDACTED]\n"
    assert more == "\nAuthorization: [REDACTED]\n"
    assert "abcdefghij" not in logged + more


def test_partial_line_never_splits_a_utf8_character() -> None:
    lines = LineAssembler(lambda text: text, partial_after=1.0)
    data = "héllo\n".encode()
    lines.feed(data[:2], now=0.0)  # "h" and the first byte of "é"
    assert lines.tick(1.0) == "h"
    assert texts(lines.feed(data[2:], now=1.2)) == ("héllo\n", "éllo\n")


# ------------------------------------------------------------------------------ stopping


@pytest.mark.timeout(30)
def test_stop_a_cooperative_agent_with_sigint(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = sleeping_agent(tmp_path / "agent", ready, exit_on_sigint=130)
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        report = agent.stop(signal.SIGINT, grace=10)
        assert report.escalated_to is None
        assert report.signals_sent == (signal.SIGINT,)
        assert report.returncode == agent.returncode == 130
        assert not is_alive(agent.pid)


@pytest.mark.timeout(30)
def test_stop_escalates_to_sigterm_when_sigint_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cub.agents")
    ready = tmp_path / "ready"
    script = sleeping_agent(tmp_path / "agent", ready, ignore=("SIGINT",))
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        report = agent.stop(signal.SIGINT, grace=0.5)
        assert report.signals_sent == (signal.SIGINT, signal.SIGTERM)
        assert report.escalated_to == signal.SIGTERM
        assert report.returncode == -signal.SIGTERM
    steps = [r.getMessage() for r in caplog.records if r.name == "cub.agents"]
    assert any(f"pid={agent.pid}" in m and "SIGINT" in m and "0.5s" in m for m in steps)
    assert any(f"pid={agent.pid}" in m and "SIGTERM" in m and "2.0s" in m for m in steps)


@pytest.mark.timeout(30)
def test_stop_ends_with_sigkill_for_a_stubborn_agent_and_its_setsid_grandchild(
    tmp_path: Path, subreaper: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cub.agents")
    ready, grandchild_file = tmp_path / "ready", tmp_path / "grandchild.pid"
    script = stubborn_agent(tmp_path / "agent", ready, grandchild_file)
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        grandchild = int(wait_for_file(grandchild_file))
        assert os.getsid(grandchild) != agent.pid  # it really left the agent's session
        report = agent.stop(signal.SIGINT, grace=0.3, term_wait=0.3)
        assert report.signals_sent == (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
        assert report.escalated_to == signal.SIGKILL
        assert report.returncode == -signal.SIGKILL
        assert not is_alive(agent.pid)
        assert not is_alive(grandchild)
        wait_until(agent.finished, timeout=2, what="finished after stop")
    steps = [r.getMessage() for r in caplog.records if f"pid={agent.pid}" in r.getMessage()]
    assert [s for s in ("SIGINT", "SIGTERM", "SIGKILL") if any(s in m for m in steps)] == [
        "SIGINT",
        "SIGTERM",
        "SIGKILL",
    ]


@pytest.mark.timeout(30)
def test_kill_tree_is_immediate_even_for_a_stubborn_agent(tmp_path: Path, subreaper: bool) -> None:
    ready, grandchild_file = tmp_path / "ready", tmp_path / "grandchild.pid"
    script = stubborn_agent(tmp_path / "agent", ready, grandchild_file)
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        grandchild = int(wait_for_file(grandchild_file))
        began = time.monotonic()
        agent.kill_tree()
        elapsed = time.monotonic() - began
        assert elapsed < 1.5, f"kill_tree took {elapsed:.2f}s"  # the spec: within a second
        assert agent.returncode == -signal.SIGKILL
        assert not is_alive(agent.pid)
        assert not is_alive(grandchild)
        # The grandchild held the pipe too; it is dead, so the output closes promptly.
        wait_until(agent.finished, timeout=2, what="finished after kill_tree")


@pytest.mark.timeout(30)
def test_agent_exits_while_its_grandchild_holds_stdout(tmp_path: Path, subreaper: bool) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    script = orphaning_agent(tmp_path / "agent", grandchild_file)
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        grandchild = int(wait_for_file(grandchild_file))
        wait_until(agent.finished, timeout=4, what="finished with the pipe still held")
        assert agent.returncode == 0
        assert is_alive(grandchild)  # still sleeping, holding the agent's stdout
        if subreaper:  # orphans come to us instead of init
            assert psutil.Process(grandchild).ppid() == os.getpid()
        assert agent.read_lines(0) == ["agent done"]
    assert not is_alive(grandchild)  # close() killed the leftover


@pytest.fixture
def as_subreaper() -> Iterator[None]:
    """This process is a child subreaper for the test, as `cub run` is."""
    assert become_subreaper()
    try:
        yield
    finally:
        become_subreaper(False)


def escaping_agent(path: Path, pid_file: Path, then: str = "", *, stubborn: bool = False) -> Path:
    """Leaves a ``sleep`` with no environment, out of its session, whose parent (a shell) has
    exited at once: it has no marker, no session and no parent that tie it to the agent.
    ``stubborn``: the sleep ignores SIGINT, SIGTERM and SIGHUP."""
    trap = "trap '' INT TERM HUP; " if stubborn else ""
    return write_script(
        path,
        f"""
        import subprocess, time
        subprocess.run(
            ["env", "-i", "setsid", "sh", "-c", "{trap}sleep 30 & echo $! > {pid_file}.tmp"],
            check=True,
        )
        import os
        os.rename("{pid_file}.tmp", "{pid_file}")
        print("escaped", flush=True)
        {then}
        """,
    )


@pytest.mark.timeout(30)
def test_an_escapee_with_no_environment_is_adopted_and_killed_at_close(
    tmp_path: Path, as_subreaper: None
) -> None:
    pid_file = tmp_path / "escapee.pid"
    script = escaping_agent(tmp_path / "agent", pid_file)
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        escapee = int(wait_for_file(pid_file))
        assert psutil.Process(escapee).ppid() == os.getpid()  # re-parented to us
        assert "CUB_AGENT_TREE" not in psutil.Process(escapee).environ()
        assert collect_lines(agent) == ["escaped"]
        assert agent.returncode == 0
    assert not is_alive(escapee)
    with pytest.raises(ChildProcessError):  # and reaped: no zombie of it is left to us
        os.waitpid(escapee, os.WNOHANG)


@pytest.mark.timeout(30)
def test_an_escapee_with_no_environment_gets_the_stop_signals(
    tmp_path: Path, as_subreaper: None
) -> None:
    pid_file = tmp_path / "escapee.pid"
    script = escaping_agent(tmp_path / "agent", pid_file, then="time.sleep(30)", stubborn=True)
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        escapee = int(wait_for_file(pid_file))
        report = agent.stop(signal.SIGINT, grace=0.3, term_wait=0.3)
        # The agent dies of SIGINT; the escapee, seen as the agent's, ignores it and SIGTERM,
        # and is what kept the tree alive until SIGKILL.
        assert report.signals_sent == (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
        assert not is_alive(escapee)


@pytest.mark.timeout(30)
def test_our_own_children_and_their_orphans_are_not_taken_for_the_agents(
    tmp_path: Path, as_subreaper: None
) -> None:
    """A hook or a child `cub` started while the agent runs (a session of its own, younger than
    the agent), and what such a child leaves re-parented to us, are cub's, not the agent's."""
    script = sleeping_agent(tmp_path / "agent", tmp_path / "ready")
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(tmp_path / "ready")
        own = subprocess.Popen(["sleep", "30"], start_new_session=True)
        left = subprocess.run(
            ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
            start_new_session=True,
            capture_output=True,
            text=True,
            check=True,
        )
        orphan = int(left.stdout)
        wait_until(lambda: psutil.Process(orphan).ppid() == os.getpid(), what="orphan adopted")
        agent.stop(signal.SIGINT, grace=2)
    try:
        assert is_alive(own.pid) and is_alive(orphan)
        assert own.poll() is None  # its exit status is still its Popen's to collect
    finally:
        own.kill()
        os.kill(orphan, signal.SIGKILL)
        os.waitpid(orphan, 0)
    assert own.wait() == -signal.SIGKILL


# ------------------------------------------------------------------------ crash recovery


@pytest.mark.timeout(30)
def test_kill_process_tree_spares_a_process_with_another_create_time() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        created = psutil.Process(sleeper.pid).create_time()
        assert kill_process_tree(sleeper.pid, created + 100) == []
        assert is_alive(sleeper.pid)
        assert kill_process_tree(sleeper.pid, created) == [sleeper.pid]
        assert not is_alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sleeper.returncode == -signal.SIGKILL


@pytest.mark.timeout(30)
def test_kill_process_tree_kills_descendants_of_a_leftover_agent(tmp_path: Path) -> None:
    ready, grandchild_file = tmp_path / "ready", tmp_path / "grandchild.pid"
    script = stubborn_agent(tmp_path / "agent", ready, grandchild_file)
    # As a dead runner would leave it: a session of its own, nobody reading its output.
    leftover = subprocess.Popen([str(script)], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_file(ready)
        grandchild = int(wait_for_file(grandchild_file))
        created = psutil.Process(leftover.pid).create_time()
        assert sorted(kill_process_tree(leftover.pid, created)) == sorted(
            [leftover.pid, grandchild]
        )
        assert not is_alive(leftover.pid)
        assert not is_alive(grandchild)
    finally:
        leftover.kill()
        leftover.wait()


@pytest.mark.timeout(30)
def test_process_matches() -> None:
    me = psutil.Process()
    assert process_matches(me.pid, me.create_time())
    assert process_matches(me.pid, None)
    assert not process_matches(me.pid, me.create_time() + 1)
    assert not process_matches(0, None)

    child = subprocess.Popen(["true"])
    created = psutil.Process(child.pid).create_time()
    wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, what="zombie")
    assert not process_matches(child.pid, created)  # exited, not yet reaped
    assert not process_matches(child.pid, None)
    child.wait()
    assert not process_matches(child.pid, created)  # gone (or the pid reused by another)


@pytest.mark.timeout(30)
def test_a_missing_program_raises_file_not_found(tmp_path: Path) -> None:
    request = AgentRequest(
        argv=(str(tmp_path / "no-such-agent"),),
        cwd=tmp_path,
        env=dict(os.environ),
        stdin=None,
        log_path=tmp_path / "harness.log",
    )
    with pytest.raises(FileNotFoundError):
        AgentProcess.start(request)


@pytest.mark.timeout(30)
def test_a_program_that_is_not_executable_raises_permission_error(tmp_path: Path) -> None:
    script = tmp_path / "agent"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(PermissionError):
        AgentProcess.start(agent_request(tmp_path, script))


@pytest.mark.timeout(30)
def test_an_agent_that_keeps_printing_after_the_signal_is_escalated_early(
    tmp_path: Path,
) -> None:
    """It ignores SIGINT and goes on working: the next step comes long before the grace."""
    ready = tmp_path / "ready"
    script = write_script(
        tmp_path / "agent",
        f"""
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        open({str(ready)!r}, "w").close()
        while True:
            print("still working", flush=True)
            time.sleep(0.2)
        """,
    )
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        report = agent.stop(signal.SIGINT, grace=60, ignored_after=1.0)
        assert report.signals_sent == (signal.SIGINT, signal.SIGTERM)
        assert report.elapsed < 30  # not the 60 s grace: it was seen ignoring the signal
        assert [(s.name, s.scope) for s in agent.take_signals()] == [
            ("SIGINT", "tree"),
            ("SIGTERM", "tree"),
        ]
        assert agent.take_signals() == []  # taken once


@pytest.mark.timeout(30)
def test_leader_first_signals_only_the_main_process_and_counts_its_last_words(
    tmp_path: Path,
) -> None:
    """The main process gets the signal alone, stops its own tool, and reports; what it prints
    while being stopped is still there to read."""
    ready, tool_pid = tmp_path / "ready", tmp_path / "tool.pid"
    script = write_script(
        tmp_path / "agent",
        f"""
        import os, signal, subprocess, sys, time
        tool = subprocess.Popen(["sleep", "60"])  # same process group: a tree signal hits it
        open({str(tool_pid)!r}, "w").write(str(tool.pid))
        def stop(*_):
            alive = tool.poll() is None
            tool.terminate(); tool.wait()
            print("final usage; my tool was alive when I was asked: " + str(alive), flush=True)
            sys.exit(0)
        signal.signal(signal.SIGINT, stop)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
        """,
    )
    with AgentProcess.start(agent_request(tmp_path, script)) as agent:
        wait_for_file(ready)
        report = agent.stop(signal.SIGINT, grace=10, leader_first=True)
        assert report.signals_sent == (signal.SIGINT,)
        assert [(s.name, s.scope) for s in agent.take_signals()] == [("SIGINT", "main")]
        lines = agent.remaining(2.0).text.split("\n")
        assert "final usage; my tool was alive when I was asked: True" in lines
        assert not is_alive(int(tool_pid.read_text()))
