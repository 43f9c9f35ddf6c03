"""The agent's output queue is bounded: an agent that prints faster than its lines are taken
waits for them (backpressure, nothing lost), and once it is being stopped the queue gives up its
oldest lines rather than make it wait. Driven through a real pipe and a real writer thread."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cub.agents.output import MAX_LINE_BYTES, QUEUE_MAX_CHARS, READ_SIZE, AgentOutput, HarnessLog

LINE = "x" * 98  # 99 bytes with its newline
LINES = (3 * QUEUE_MAX_CHARS) // len(LINE)  # three queues' worth


def output_on_a_pipe(
    log_path: Path, looks_for: tuple[bytes, ...] | None = None
) -> tuple[AgentOutput, int]:
    """An output reading a fresh pipe (and logging to ``log_path``) for a parser that looks for
    ``looks_for``; its write end."""
    read_fd, write_fd = os.pipe()
    output = AgentOutput(
        open(read_fd, "rb", buffering=0),  # noqa: SIM115 - closed with the reader's end
        HarnessLog(open(log_path, "ab"), None, pid=0),  # noqa: SIM115 - closed by finish
        lambda text: text.replace("s3cr3t", "[REDACTED]"),
        pid=0,
        stopping=threading.Event(),
        looks_for=looks_for,
    )
    return output, write_fd


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.log_path = tmp_path / "harness.log"
        self.output, self.write_fd = output_on_a_pipe(self.log_path)
        self.reader = threading.Thread(target=self.output.drain, daemon=True)
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.written = threading.Event()

    def _write(self) -> None:
        block = (LINE + "\n").encode() * 1000
        for _ in range(LINES // 1000):
            os.write(self.write_fd, block)
        os.close(self.write_fd)
        self.written.set()

    def start(self) -> None:
        self.reader.start()
        self.writer.start()

    def finish(self) -> None:
        self.reader.join(30)
        self.output.log.close()


def test_a_slow_reader_slows_the_agent_and_loses_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.start()
    taken: list[str] = []
    # The caller takes nothing for a while: the agent must be held back, not buffered.
    time.sleep(1.0)
    assert not rig.written.is_set(), "the writer was never held back"
    assert rig.output.peak_queued <= QUEUE_MAX_CHARS
    while True:
        batch = rig.output.wait_for_output(0.2, lambda: rig.output.closed).text
        assert batch.endswith("\n") or not batch  # whole lines only
        taken += batch.split("\n")[:-1]
        if rig.output.closed and not batch:
            break
    rig.finish()
    assert len(taken) == (LINES // 1000) * 1000 and set(taken) == {LINE}
    assert rig.output.lines_dropped == 0
    # At most one read (and the line it completes) beyond the bound.
    assert rig.output.peak_queued <= QUEUE_MAX_CHARS + READ_SIZE + MAX_LINE_BYTES
    assert rig.log_path.stat().st_size == len(taken) * (len(LINE) + 1)


def test_while_stopping_the_queue_drops_its_oldest_lines_and_never_blocks(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.output.stop_waiting()
    rig.start()
    assert rig.written.wait(30), "the writer was held back although nobody is to read"
    rig.finish()
    kept = rig.output.remaining_output(0).text.split("\n")[:-1]
    assert rig.output.lines_dropped > 0
    assert sum(len(line) for line in kept) <= QUEUE_MAX_CHARS
    assert len(kept) + rig.output.lines_dropped == (LINES // 1000) * 1000
    # The log is complete: only the caller's queue gave lines up.
    assert rig.log_path.stat().st_size == (LINES // 1000) * 1000 * (len(LINE) + 1)


@pytest.mark.parametrize("at", [1, 3, 5])
def test_a_secret_split_across_two_reads_is_masked(tmp_path: Path, at: int) -> None:
    log_path = tmp_path / "harness.log"
    output, write_fd = output_on_a_pipe(log_path)
    reader = threading.Thread(target=output.drain, daemon=True)
    reader.start()
    line = b"token=s3cr3t done\n"
    cut = line.index(b"s3cr3t") + at
    os.write(write_fd, line[:cut])
    time.sleep(0.3)  # the reader has the first part on its own
    os.write(write_fd, line[cut:])
    os.close(write_fd)
    reader.join(10)
    output.log.close()
    assert output.remaining_output(0).text == "token=[REDACTED] done\n"
    assert log_path.read_text() == "token=[REDACTED] done\n"
