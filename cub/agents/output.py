"""An agent's output on its way from the pipe: read by a thread of its own, cut into lines,
redacted, queued for the caller, and streamed to harness.log under its cap."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Protocol, runtime_checkable

import msgspec

from cub.agents.sieve import sieve_for
from cub.records.redact import redact_each_line

logger = logging.getLogger("cub.agents")

READ_POLL_MS = 200  # the reader wakes at least this often to flush partial lines
# The pipe is widened to this (Linux's default most may ask for) and read as much at a time: a
# sixteenth of the wake-ups and reads of the default 64 KiB for an agent printing fast.
PIPE_SIZE = 1 << 20
READ_SIZE = PIPE_SIZE
PARTIAL_LINE_AFTER = 1.0  # a line without newline reaches the log after this long
MAX_LINE_BYTES = 1 << 20  # longer "lines" are cut so memory and redaction stay bounded
# A reader waiting for lines wakes this often: the end can come without a notification (the
# agent exited, a leftover holds the pipe open).
RECHECK_INTERVAL = 0.1
# The lines waiting for the caller hold at most this much text: beyond it the reader waits for
# the caller (and the agent, once the pipe is full, for the reader), so an agent that prints
# faster than its lines are parsed is slowed down rather than filling cub's memory.
QUEUE_MAX_CHARS = 4 << 20
# Pieces of output smaller than this are parsed without asking the parser's sieve: a few lines
# cost less to parse than the sieve to build.
SIEVE_FROM_BYTES = 64 << 10


class Output(msgspec.Struct, frozen=True):
    """Whole lines of an agent's output, each ending in "\n" (as one text)."""

    text: str = ""
    # False when the parser's sieve found nothing it looks for in them: it can pass them over.
    to_parse: bool = True


class Assembled(msgspec.Struct, frozen=True):
    """What one chunk of output makes: complete lines for the caller, text for the log."""

    lines: str = ""
    log: str = ""
    to_parse: bool = False  # whether the lines may hold what the parser looks for


def _utf8_cut(buf: bytes | bytearray, end: int) -> int:
    """The largest cut <= end that does not split a UTF-8 sequence."""
    for back in range(1, min(4, end) + 1):
        byte = buf[end - back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if byte < 0x80:
            return end
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return end if back >= need else end - back
    return end


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")


@runtime_checkable
class LinesRedactor(Protocol):
    """A redactor that also takes many whole lines at once (`cub.records.redact.Redactor`)."""

    def __call__(self, text: str) -> str: ...
    def lines(self, data: bytes) -> str: ...


def _line_by_line(redact: Callable[[str], str]) -> Callable[[bytes], str]:
    """``LinesRedactor.lines`` for a redactor that takes one line at a time."""

    def lines(data: bytes) -> str:
        return redact_each_line(redact, _decode(data))

    return lines


class LineAssembler:
    """Turns output chunks into redacted text: whole lines for the caller, and for the log.

    The complete lines of a chunk are redacted together (``LinesRedactor.lines``: each line as
    if on its own) and handed on as one text, never split here: splitting 10 million lines
    costs seconds, and most callers only need to look for a few words in them. The caller's
    text ends every line with "\n" (a CRLF line loses its "\r"); the log's keeps each line's
    own ending.

    Redaction works on whole lines, so a secret split across reads is still masked: the log is
    written per complete line. A line that stays incomplete for ``partial_after`` seconds (a
    progress bar) is written anyway so the log shows it, in two ways:

    * while output keeps coming, only up to the last whitespace (a secret is one token, so the
      token being written is held back until it is finished);
    * once output has been quiet that long, all of it.

    Each partial write redacts the whole line so far and appends only what is new; if redacting
    with more context changes what was already written (``Bearer`` then its token), the whole
    line is written again, redacted, on a new line rather than leak the rest of the secret.
    """

    def __init__(
        self,
        redact: Callable[[str], str],
        partial_after: float,
        looks_for: tuple[bytes, ...] | None = None,
    ) -> None:
        self._redact_lines = (
            redact.lines if isinstance(redact, LinesRedactor) else _line_by_line(redact)
        )
        self._partial_after = partial_after
        self._looks_for = looks_for  # the parser's patterns (`cub.agents.sieve`); None: all
        self._to_parse = False  # whether a line handed on since the last feed needs parsing
        self._buf = bytearray()  # the current incomplete line
        self._logged = 0  # bytes of _buf already written to the log...
        self._written = ""  # ...as this redacted text
        self._pending_since: float | None = None
        self._last_data = 0.0

    def feed(self, chunk: bytes, now: float) -> Assembled:
        """The complete lines ``chunk`` ends, for the caller and for the log."""
        self._last_data = now
        lines: list[str] = []
        log: list[str] = []
        end = chunk.rfind(b"\n") + 1
        start = 0
        if end and self._logged:  # the first line ends one already partly in the log
            start = chunk.index(b"\n") + 1
            self._buf += chunk[: start - 1]
            self._end_line(lines, log, terminator="\n")
        if start < end:
            # The line begun in an earlier chunk, if any, is redacted with the rest: one text,
            # so nothing megabytes long is copied again to join pieces.
            data = bytes(self._buf) + chunk[start:end] if self._buf else chunk[start:end]
            self._buf.clear()
            self._pending_since = None
            self._note_parse(data)
            text = self._redact_lines(data)
            log.append(text)
            lines.append(text.replace("\r\n", "\n") if "\r" in text else text)
        self._buf += chunk[end:]
        if len(self._buf) >= MAX_LINE_BYTES:
            self._end_line(lines, log, terminator="\n")
        if self._buf and self._pending_since is None:
            self._pending_since = now
        return self._assembled(lines, log)

    def tick(self, now: float) -> str:
        """Log text for a partial line that has waited long enough ("" if none)."""
        if self._pending_since is None or now - self._pending_since < self._partial_after:
            return ""
        if now - self._last_data >= self._partial_after:
            cut = _utf8_cut(self._buf, len(self._buf))
        else:
            cut = max(self._buf.rfind(b" "), self._buf.rfind(b"\t"), self._buf.rfind(b"\r")) + 1
        if cut <= self._logged:
            return ""
        text = self._redact_one(self._buf[:cut])
        piece = self._continuation(text)
        self._logged, self._written, self._pending_since = cut, text, now
        return piece

    def finish(self) -> Assembled:
        """At end of output: the final line without newline, if any, and its log text."""
        lines: list[str] = []
        log: list[str] = []
        if self._buf:
            self._end_line(lines, log, terminator="")
        return self._assembled(lines, log)

    def _assembled(self, lines: list[str], log: list[str]) -> Assembled:
        to_parse, self._to_parse = self._to_parse, False
        return Assembled("".join(lines), "".join(log), to_parse)

    def _note_parse(self, data: bytes | bytearray) -> None:
        """Whether the lines in ``data`` go to the parser: all of them, unless its sieve
        finds nothing it looks for."""
        if self._to_parse:
            return
        if self._looks_for is not None and len(data) >= SIEVE_FROM_BYTES:
            sieve = sieve_for(self._looks_for)
            if sieve is not None and not sieve.found_in(data):
                return
        self._to_parse = True

    def _end_line(self, lines: list[str], log: list[str], terminator: str) -> None:
        self._note_parse(self._buf)
        line = self._redact_one(self._buf)
        if line.endswith("\r"):  # a CRLF line: the caller gets it without its line ending
            line, terminator = line[:-1], "\r" + terminator
        lines.append(line + "\n")
        log.append(self._continuation(line + terminator))
        self._buf.clear()
        self._logged, self._written, self._pending_since = 0, "", None

    def _redact_one(self, line: bytes | bytearray) -> str:
        """One line (without its newline; a last "\r" is kept apart) decoded and redacted, as
        fast as a chunk of lines: it may be megabytes long."""
        return self._redact_lines(bytes(line) + b"\n")[:-1]

    def _continuation(self, redacted: str) -> str:
        if redacted.startswith(self._written):
            return redacted[len(self._written) :]
        return "\n" + redacted


class HarnessLog:
    """harness.log as the output streams into it: flushed as it arrives, cut at ``max_bytes``
    (what is cut is counted, and named in a last line), and never a reason to stop reading the
    agent: a write that fails ends the logging, not the run."""

    def __init__(self, file: IO[bytes], max_bytes: int | None, pid: int) -> None:
        self._file = file
        self._max = max_bytes
        self._pid = pid
        self._lock = threading.Lock()
        self._failed = False
        self._size = file.tell()  # opened for appending: what the file already holds
        self._ends_line = True
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Bytes of (redacted) output not written because of the cap."""
        with self._lock:
            return self._dropped

    def write(self, text: str) -> None:
        with self._lock:
            if self._file.closed or self._failed:
                return
            self._append(self._within_cap(text.encode("utf-8", "replace")))

    def close(self) -> None:
        with self._lock:
            self._write_cut_notice()
            self._file.close()

    def _append(self, data: bytes) -> None:
        """Write to the open log (the caller holds the lock)."""
        if not data:
            return
        try:
            self._file.write(data)
            self._file.flush()  # streamed: the log shows output while the agent runs
        except OSError as exc:  # disk full etc.: keep draining the agent, stop logging
            self._failed = True
            logger.warning("agent pid=%d: cannot write harness.log: %s", self._pid, exc)
            return
        self._size += len(data)
        self._ends_line = data.endswith(b"\n")

    def _within_cap(self, data: bytes) -> bytes:
        """What of ``data`` still fits under the cap; the rest is counted as dropped."""
        if self._max is None:
            return data
        room = max(0, self._max - self._size)
        if len(data) <= room:
            return data
        cut = _utf8_cut(data, room)
        if not self._dropped:
            logger.warning(
                "agent pid=%d: harness.log reached its cap of %d bytes; not writing more",
                self._pid,
                self._max,
            )
        self._dropped += len(data) - cut
        return data[:cut]

    def _write_cut_notice(self) -> None:
        """The log's last line says how much of the output its cap kept out."""
        if not self._dropped or self._file.closed or self._failed:
            return
        notice = (
            f"[cub] harness.log reached its cap of {self._max} bytes "
            f"(loop.log_max_bytes): {self._dropped} more bytes of output were not written\n"
        )
        self._append(("" if self._ends_line else "\n").encode() + notice.encode())


class AgentOutput:
    """The agent's merged stdout and stderr. ``drain`` (a thread's target) reads the pipe until
    it closes; complete lines wait in a bounded queue for the caller (`QUEUE_MAX_CHARS`), a
    read's worth at a time, and everything goes to the log.

    Once the agent is being stopped (``stop_waiting``) the reader no longer waits for the
    caller, who is busy stopping it: an agent must never be kept from exiting by a full pipe.
    The queue stays bounded then by giving up its oldest lines (counted in ``lines_dropped``;
    the log still has them)."""

    def __init__(
        self,
        pipe: IO[bytes],
        log: HarnessLog,
        redact: Callable[[str], str],
        *,
        pid: int,
        stopping: threading.Event,
        looks_for: tuple[bytes, ...] | None = None,
    ) -> None:
        self.pipe = pipe
        with contextlib.suppress(OSError, ValueError):  # not a pipe, or over the limit: keep it
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.log = log
        self._pid = pid
        self._stopping = stopping  # set once the tree is dead and cub is closing
        self._assembler = LineAssembler(redact, PARTIAL_LINE_AFTER, looks_for)
        self._cond = threading.Condition()
        self._texts: deque[str] = deque()  # each: whole lines, each ending in "\n"
        self._queued = 0  # characters in _texts
        self._to_parse = False  # whether any of _texts may hold what the parser looks for
        self.peak_queued = 0
        self.lines_dropped = 0
        self._waiting_allowed = True
        self.closed = False  # the pipe reached its end (or can no longer be read)
        self.reader_waiting = False  # the reader is idle, waiting for the pipe
        self.last_output_at = time.monotonic()

    def wait_for_output(self, timeout: float, finished: Callable[[], bool]) -> Output:
        """The complete lines that have arrived, as one text (each line ending in "\n"); waits
        up to ``timeout`` for one, or for the end (the output closed, or ``finished()``)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self._texts:
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0 or finished():
                    return Output()
                self._cond.wait(min(remaining, RECHECK_INTERVAL))
            return self._take()

    def remaining_output(self, timeout: float) -> Output:
        """Every line not taken yet, waiting up to ``timeout`` for the output to end."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while not self.closed and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(min(remaining, RECHECK_INTERVAL))
            return self._take()

    def pipe_readable(self) -> bool:
        if self.pipe.closed:
            return False
        readable, _, _ = select.select([self.pipe.fileno()], [], [], 0)
        return bool(readable)

    def drain(self) -> None:
        """Background: read until EOF; a failure here discards the rest rather than block."""
        fd = self.pipe.fileno()
        try:
            self._read_until_closed(fd)
        except Exception:
            logger.exception("agent pid=%d: output reader failed; discarding output", self._pid)
            _discard_until_closed(fd, self._stopping)
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def stop_waiting(self) -> None:
        """From now on the reader never waits for the caller (see the class docstring)."""
        with self._cond:
            self._waiting_allowed = False
            self._cond.notify_all()

    def _take(self) -> Output:
        """Everything queued (the caller holds the condition); the reader may go on."""
        output = Output("".join(self._texts), self._to_parse)
        self._texts.clear()
        self._queued = 0
        self._to_parse = False
        self._cond.notify_all()
        return output

    def _read_until_closed(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        stop_seen: float | None = None
        while True:
            self.reader_waiting = True
            ready = poller.poll(READ_POLL_MS)
            self.reader_waiting = False
            now = time.monotonic()
            if ready:
                chunk = os.read(fd, READ_SIZE)
                if not chunk:
                    break
                self.last_output_at = now
                self._emit(self._assembler.feed(chunk, now))
            if self._stopping.is_set():
                # The tree is dead; an unknown holder may keep the pipe open, so drain what is
                # there and leave.
                stop_seen = now if stop_seen is None else stop_seen
                if not ready or now - stop_seen > 1.0:
                    break
            self._emit(Assembled(log=self._assembler.tick(now)))
        self._emit(self._assembler.finish())

    def _emit(self, piece: Assembled) -> None:
        if piece.log:
            self.log.write(piece.log)
        lines = piece.lines
        if not lines:
            return
        size = len(lines)
        with self._cond:
            # A batch larger than the whole bound still goes through into an empty queue.
            while self._queued and self._queued + size > QUEUE_MAX_CHARS and self._may_wait():
                self._cond.wait(RECHECK_INTERVAL)
            self._texts.append(lines)
            self._queued += size
            self._to_parse = self._to_parse or piece.to_parse
            while not self._may_wait() and self._queued > QUEUE_MAX_CHARS and self._texts:
                dropped = self._texts.popleft()
                self._queued -= len(dropped)
                self.lines_dropped += dropped.count("\n")
            self.peak_queued = max(self.peak_queued, self._queued)
            self._cond.notify_all()

    def _may_wait(self) -> bool:
        return self._waiting_allowed and not self._stopping.is_set()


def feed_stdin(pipe: IO[bytes], data: bytes) -> None:
    """Write the prompt and close the pipe (a thread's target: an agent that never reads its
    stdin cannot block cub on a full pipe)."""
    try:
        pipe.write(data)
    except OSError:  # the agent exited or closed its stdin early: its business, not an error
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _discard_until_closed(fd: int, stopping: threading.Event) -> None:
    while not stopping.is_set():
        ready, _, _ = select.select([fd], [], [], READ_POLL_MS / 1000)
        if ready and not os.read(fd, READ_SIZE):
            return
