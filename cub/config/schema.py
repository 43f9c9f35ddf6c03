"""The effective configuration as typed structs: every key, its type, its limits, its default.

Config is strict (``forbid_unknown_fields=True``): a typo such as ``loop.on_falure`` is an error
naming the key, never a silently ignored setting. Every field has a default, so an empty file,
or no file at all, is a complete configuration.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

from cub.durations import format_duration, parse_duration
from cub.records.redact import Redactor, alternative

HarnessName = Literal["claude", "codex", "gemini", "opencode", "command"]
FailurePolicy = Literal["stop", "continue", "retry"]
InterruptPolicy = Literal["stop", "finish"]
BackendMode = Literal["auto", "jsonl", "prd", "beads"]

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Duration(float):
    """Seconds, written in a config file as a number (``90``) or a string (``"1h30m"``).

    A float subclass so that code using the config does plain arithmetic on it; the decode hook
    below is what lets msgspec accept the string forms (and report bad ones at their key path).
    """

    def __repr__(self) -> str:
        return f"Duration({float(self)!r})"


def decode_hook(type_: type, obj: Any) -> Any:
    """msgspec ``dec_hook``: turn ``10``/``"10s"`` into a ``Duration``; errors carry the path."""
    if type_ is Duration:
        return Duration(parse_duration(obj))
    raise NotImplementedError(f"cannot decode {type_!r}")


def seconds_hook(obj: Any) -> Any:
    """msgspec ``enc_hook`` for machine records: a Duration is its number of seconds."""
    if isinstance(obj, Duration):
        return float(obj)
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


def human_duration_hook(obj: Any) -> Any:
    """msgspec ``enc_hook`` for files people edit: a Duration is written as ``"10m"``."""
    if isinstance(obj, Duration):
        return format_duration(obj)
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for every config section: strict about keys, keyword-only construction."""


class HarnessConfig(Section):
    # None: auto-detect from `priority`, by which programs are on PATH.
    name: HarnessName | None = None
    priority: list[HarnessName] = field(
        default_factory=lambda: ["claude", "codex", "opencode", "gemini"]
    )
    model: str | None = None
    # Command line for the `command` harness; the prompt arrives on stdin and $CUB_PROMPT_FILE.
    command: str | None = None
    env: dict[EnvName, str] = field(default_factory=dict)
    # Empty means the agent inherits the whole environment; otherwise only these names pass.
    pass_env: list[EnvName] = field(default_factory=list)
    extra_args: dict[HarnessName, list[str]] = field(default_factory=dict)


class LoopConfig(Section):
    on_failure: FailurePolicy = "stop"
    max_attempts: PositiveInt = 3
    max_iterations: PositiveInt | None = None
    # Shell commands that must all pass for an attempt to count as a success.
    verify: list[str] = field(default_factory=list)
    verify_timeout: Duration = Duration(600)
    on_interrupt: InterruptPolicy = "stop"
    grace: Duration = Duration(10)
    task_timeout: Duration = Duration(1800)
    idle_timeout: Duration = Duration(600)
    # Whole-run wall clock; None means no limit.
    timeout: Duration | None = None
    circuit_breaker: bool = True
    # harness.log stops growing here (the output is still read); the cut is recorded.
    log_max_bytes: PositiveInt = 256 * 1024 * 1024


class ModelPrice(Section):
    """US dollars per million tokens, for models whose harness does not report cost."""

    input_per_mtok: NonNegativeFloat = 0.0
    output_per_mtok: NonNegativeFloat = 0.0
    cache_read_per_mtok: NonNegativeFloat = 0.0
    cache_write_per_mtok: NonNegativeFloat = 0.0


class BudgetConfig(Section):
    tokens: PositiveInt | None = None
    cost_usd: Annotated[float, Meta(gt=0)] | None = None
    tasks: PositiveInt | None = None
    # Fraction of any budget at which the on-budget-warning hook fires.
    warn_at: Annotated[float, Meta(gt=0, le=1)] = 0.8
    prices: dict[str, ModelPrice] = field(default_factory=dict)


class HooksConfig(Section):
    enabled: bool = True
    # A failing pre-loop/pre-task hook ends the run `failed` instead of being logged.
    fail_fast: bool = False
    timeout: Duration = Duration(60)


class BackendConfig(Section):
    mode: BackendMode = "auto"
    # Task file relative to the project (e.g. ".beads/issues.jsonl"); None = the default.
    path: str | None = None


class BranchConfig(Section):
    prefix: str = "cub/"
    protected: list[str] = field(default_factory=lambda: ["main", "master"])


class GithubConfig(Section):
    repo: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] | None = None
    close_on_success: bool = False
    api_url: str | None = None


class SandboxConfig(Section):
    image: str = "cub-sandbox:latest"
    # Names of host variables (API keys) allowed into the container; nothing else passes.
    env: list[EnvName] = field(default_factory=list)
    memory: Annotated[str, Meta(pattern=r"^[0-9]+(\.[0-9]+)?[bkmgBKMG]?$")] = "2g"
    cpus: Annotated[float, Meta(gt=0)] = 2.0
    pids_limit: PositiveInt = 512
    network: bool = True
    # Where the children of `--parallel N --sandbox` run: containers on one engine, or the
    # services of a Docker Swarm whose manager DOCKER_HOST names.
    engine: Literal["docker", "swarm"] = "docker"


class RedactionConfig(Section):
    patterns: list[str] = field(default_factory=list)
    use_defaults: bool = True

    def __post_init__(self) -> None:
        # A bad pattern is a config error now, not a crash halfway through a run (or in the
        # recovery of a dead one): each is checked the way the redactor will compile it, as
        # one alternative of a single regex after the defaults.

        for pattern in self.patterns:
            try:
                alone = re.compile(alternative(pattern))
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
            if alone.fullmatch(""):
                raise ValueError(
                    f"regular expression {pattern!r} matches the empty string "
                    "(it would mask between every character)"
                )
        try:
            Redactor.for_config(self)
        except re.error as exc:  # e.g. a back-reference that means another group once joined
            raise ValueError(f"the patterns do not compile together: {exc}") from None


class Config(Section):
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    branch: BranchConfig = field(default_factory=BranchConfig)
    github: GithubConfig = field(default_factory=GithubConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
