"""Turning SIGINT, SIGTERM and SIGHUP into the run's interrupt and force-kill triggers.

The handler only records the first signal and wakes whoever waits; the run driver fires the
`interrupt` trigger at its next checkpoint. A second signal must end the run within a second
whatever the main thread is doing, so it raises `ForceKillRequested` (a BaseException, like
KeyboardInterrupt) right where the main thread is; the driver turns that into `force_kill`.
Once the run has entered a terminal state, further signals change nothing.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, NoReturn

from cub.errors import ForceKillRequested

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(BaseException):
    """Raised at a checkpoint after the first signal, to unwind to the driver's stop path."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class InterruptWatch:
    def __init__(self, *, armed: bool = True) -> None:
        self.first: int | None = None
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
        if self.first is None:
            self.first = signum
            self.wake.set()
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

    @property
    def requested(self) -> bool:
        return self.first is not None

    def checkpoint(self) -> None:
        if self.first is not None:
            raise StopRequested(self.first)
