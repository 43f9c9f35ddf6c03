"""The adapter for each harness name. (What their stream parsers share: `cub.agents.stream`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cub.agents.claude import ClaudeHarness
from cub.agents.codex import CodexHarness
from cub.agents.command import CommandHarness
from cub.agents.gemini import GeminiHarness
from cub.agents.opencode import OpenCodeHarness

if TYPE_CHECKING:
    from cub.agents.harness import Harness
    from cub.agents.registry import HarnessChoice
    from cub.config.schema import Config, ModelPrice


def adapter_for(choice: HarnessChoice, config: Config | None = None) -> Harness:
    """The adapter for ``choice``. From ``config`` it takes ``harness.extra_args[name]``
    (extra command-line arguments) and ``budget.prices`` (for agents that report no cost)."""
    extra: tuple[str, ...] = ()
    prices: dict[str, ModelPrice] = {}
    if config is not None:
        configured = config.harness.extra_args.items()
        extra = next((tuple(args) for name, args in configured if name == choice.name), ())
        prices = dict(config.budget.prices)
    if choice.name == "command":
        return CommandHarness((*choice.command, *extra))
    if choice.name == "claude":
        return ClaudeHarness(choice.program, extra_args=extra, prices=prices)
    if choice.name == "codex":
        return CodexHarness(choice.program, extra_args=extra, prices=prices)
    if choice.name == "gemini":
        return GeminiHarness(choice.program, extra_args=extra, prices=prices)
    if choice.name == "opencode":
        return OpenCodeHarness(choice.program, extra_args=extra, prices=prices)
    # Unreachable: validation accepts only the names handled above.
    raise AssertionError(f"no adapter for the {choice.name!r} harness")
