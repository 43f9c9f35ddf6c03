"""Turning SIGINT, SIGTERM and SIGHUP into the run's interrupt and force-kill triggers.

The handler only records the first signal and wakes whoever waits; the run driver fires the
`interrupt` trigger at its next checkpoint. A second signal must end the run within a second
whatever the main thread is doing, so it raises `ForceKillRequested` (a BaseException, like
KeyboardInterrupt) right where the main thread is; the driver turns that into `force_kill`.
Once the run has entered a terminal state, further signals change nothing.

One request, one interrupt: a stop signal that reaches cub within `SAME_REQUEST_WINDOW`
(0.5 s) of the first is the same request delivered twice, not a second one. GNU `timeout -s INT`
sends its signal to cub and then to cub's whole process group, and `kill -INT -PGID` from a
shell that also signals cub does the same; those copies land microseconds apart (and Python
may or may not fold them into one handler call). A person's second Ctrl+C comes after the first
was announced ("interrupt again to kill it now"); one sent sooner than the window is dropped,
and the next one kills. The window is timed when the handler runs, which for copies of one
delivery is within milliseconds of each other however busy the process is.

A `cub run` installs this watch first thing, in `cub.cli.early_watch`, before any other import
(`EARLY_WATCH`), so this module imports nothing that is not already loaded at that point
beyond `threading` and `cub.errors`. What remains before it is the interpreter's own start
(≈10–40 ms, most of it `site` and the packages' .pth files): a SIGINT there gets Python's
KeyboardInterrupt traceback (or, in its first milliseconds, kills it), a SIGTERM or SIGHUP the
default death by signal, and in both cases no cub code has run and no run directory exists.
"""

from __future__ import annotations

import signal
import threading
import time

from cub.errors import ForceKillRequested

# `typing` costs milliseconds of the early window; mypy treats this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any, NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# A stop signal this soon after the first is the same request delivered again (see above).
SAME_REQUEST_WINDOW = 0.5


class StopRequested(BaseException):
    """Raised at a checkpoint after the first signal, to unwind to the driver's stop path."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class InterruptWatch:
    def __init__(self, *, armed: bool = True) -> None:
        self.first: int | None = None
        self.first_at: float | None = None  # time.monotonic() when the first was handled
        self.second: int | None = None
        self.wake = threading.Event()
        # Under `loop.on_interrupt: finish`, when the attempt's grace runs out.
        self.finish_deadline: float | None = None
        # Unarmed (before the run has a machine to record it), a second signal is only noted;
        # `arm()` raises it once there is.
        self._armed = armed
        # Set once the force kill has been raised or the run has ended: never raise again.
        self._done = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        # Python only lets the main thread install handlers; elsewhere (an embedding test
        # harness, a worker thread) the run simply isn't interruptible by signal.
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return  # not allowed here, or installed already (the CLI's early watch)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self, *, ignore_over_default: bool = False) -> None:
        """Put back the handlers that were there before `install`, where ours is still in place.

        ``ignore_over_default`` ignores the signal instead where the handler before was
        Python's default: in a process that exits once the run is recorded, the default would
        let a late Ctrl+C turn that ending into a KeyboardInterrupt, or a late SIGTERM into
        death by signal, on the way out. (SIG_IGN rather than our disarmed handler, because
        the interpreter resets Python-level handlers to the default while it shuts down.)
        """
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) != self._handle:
                continue
            if ignore_over_default and previous in (signal.default_int_handler, signal.SIG_DFL):
                previous = signal.SIG_IGN
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first, self.first_at = signum, now
            self.wake.set()
            return
        if self.is_same_request(now):
            return
        if self.second is None:
            self.second = signum
        if self._armed:
            self._armed, self._done = False, True
            raise ForceKillRequested(signum)

    def arm(self) -> None:
        """From now on a second signal raises `ForceKillRequested`; one that came while the
        watch was unarmed (the run's records were being set up) raises here."""
        if self._done:
            return
        if self.second is not None:
            self._done = True
            raise ForceKillRequested(self.second)
        self._armed = True

    def force_kill(self, signum: int) -> NoReturn:
        """Raise the force kill from ordinary code (a grace period that ran out) exactly as a
        second signal would: once, and never again after it."""
        self._armed, self._done = False, True
        raise ForceKillRequested(signum)

    def disarm(self) -> None:
        """The run is entering its terminal state: later signals must not interrupt the record."""
        self._armed, self._done = False, True

    def is_same_request(self, now: float) -> bool:
        """Whether a signal handled at ``now`` is a copy of the first rather than a new request."""
        return self.first_at is not None and now - self.first_at < SAME_REQUEST_WINDOW

    @property
    def requested(self) -> bool:
        return self.first is not None

    def checkpoint(self) -> None:
        if self.first is not None:
            raise StopRequested(self.first)
