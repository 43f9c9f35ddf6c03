"""The adapter for each harness name."""

from __future__ import annotations

from cub.agents.harness import Harness
from cub.agents.registry import HarnessChoice
from cub.errors import SetupFailed


def adapter_for(choice: HarnessChoice) -> Harness:
    if choice.name == "command":
        from cub.agents.command import CommandHarness

        return CommandHarness(choice.command)
    raise SetupFailed(
        "harness_failed",
        f"the {choice.name!r} harness is not available in this build of cub; "
        "use --harness command --harness-cmd CMD",
    )
