"""Which agent program a run uses: by flag, by config, or detected on PATH."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence

import msgspec

from cub.errors import Rejected

# Harness name → the program it runs.
PROGRAMS: dict[str, str] = {
    "claude": "claude",
    "codex": "codex",
    "gemini": "gemini",
    "opencode": "opencode",
}
KNOWN_HARNESSES = (*PROGRAMS, "command")


class HarnessChoice(msgspec.Struct, frozen=True):
    name: str
    program: str  # absolute path of the program found on PATH
    command: tuple[str, ...] = ()  # the full command line, for the `command` harness


def resolve_harness(
    name: str | None,
    command: str | None,
    priority: Sequence[str],
    path: str | None,
) -> HarnessChoice:
    """Find the harness to run; a problem is a `Rejected` naming what was looked for."""
    if name is None and command:
        name = "command"
    if name is None:
        return _detect(priority, path)
    if name not in KNOWN_HARNESSES:
        raise Rejected(
            "unknown_harness",
            f"--harness {name!r} is not a known harness (choose one of: "
            f"{', '.join(KNOWN_HARNESSES)})",
        )
    if name == "command":
        return _command_harness(command, path)
    found = shutil.which(PROGRAMS[name], path=path)
    if found is None:
        raise Rejected(
            "harness_not_found",
            f"harness {name!r} needs the program {PROGRAMS[name]!r}, which is not on PATH",
        )
    return HarnessChoice(name=name, program=found)


def _command_harness(command: str | None, path: str | None) -> HarnessChoice:
    if not command or not command.strip():
        raise Rejected(
            "missing_harness_command",
            "--harness command needs a command line: pass --harness-cmd CMD "
            "or set harness.command in .cub/config.json",
        )
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise Rejected(
            "missing_harness_command", f"--harness-cmd {command!r} cannot be parsed: {exc}"
        ) from exc
    found = shutil.which(argv[0], path=path)
    if found is None:
        raise Rejected(
            "harness_not_found",
            f"--harness-cmd program {argv[0]!r} is not on PATH and is not an executable file",
        )
    return HarnessChoice(name="command", program=found, command=argv)


def _detect(priority: Sequence[str], path: str | None) -> HarnessChoice:
    for name in priority:
        program = PROGRAMS.get(name)
        if program and (found := shutil.which(program, path=path)):
            return HarnessChoice(name=name, program=found)
    looked = ", ".join(p for p in priority if p in PROGRAMS)
    raise Rejected(
        "harness_not_found",
        f"no agent harness found on PATH (looked for: {looked}); install one, or pass "
        "--harness command --harness-cmd CMD",
    )
