"""Every exception cub raises on purpose, with names that say what went wrong."""

from __future__ import annotations


class CubError(Exception):
    """Base for cub's own errors."""


class InvalidChart(CubError):
    """The state chart breaks a rule (unreachable state, trap state, edge out of a terminal)."""


class Rejected(CubError):
    """The invocation is refused before any work: becomes a validation_rejected run.

    ``reason_code`` is the machine word recorded in run.json; ``str(exc)`` is the one-line
    message shown to the user (it names the flag, file, line or key at fault).
    """

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConfigError(Rejected):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_config", message)


class TaskFileError(Rejected):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_task_file", message)


class SetupFailed(CubError):
    """Preparing the run failed (branch, worktree, backend, harness, pre-loop hook)."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class TaskNotFound(CubError):
    pass


class BackendError(CubError):
    """The task backend could not be read or updated."""


class ForceKillRequested(BaseException):
    """Raised from the signal handler on a second interrupt.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way up can
    swallow it; the run driver turns it into the machine's ``force_kill`` trigger.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class TaskInputError(CubError):
    """A change by hand that would leave the backlog wrong (an unknown dependency, say)."""


class InvalidTaskId(CubError, ValueError):
    """A task id that cannot safely become a directory name (``..``, ``/``, empty, too long)."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, however many lines its library gave it."""
    return " ".join(str(exc).split())
