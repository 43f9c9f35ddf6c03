"""Build the effective config from its layers, lowest first.

defaults < user file (``$XDG_CONFIG_HOME/cub/config.json``) < project ``.cub/config.json``
< ``CUB_*`` environment variables < ``overrides`` (dotted keys built from command-line flags).

Each layer is validated on its own before merging, so an error names the file (or variable, or
option) it came from; the merged dict is then decoded once into ``Config``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from cub.config.messages import (
    describe_validation_error,
    json_error_parts,
    nul_character_at,
    relative_label,
)
from cub.config.schema import (
    Config,
    decode_hook,
    human_duration_hook,
    seconds_hook,
)
from cub.durations import ACCEPTED_FORMS, parse_duration
from cub.errors import ConfigError

PROJECT_CONFIG = Path(".cub") / "config.json"


class LoadedConfig(msgspec.Struct, frozen=True, kw_only=True):
    config: Config
    # Files that existed and were read, lowest layer first.
    sources: list[Path]


def user_config_path(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "cub" / "config.json"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".config" / "cub" / "config.json"


def load_config(
    project_dir: Path,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    *,
    with_project: bool = True,
) -> LoadedConfig:
    """The effective config; ``ConfigError`` (one line: source, key path, problem) if invalid.
    ``with_project=False``: what the user alone configured (their file and environment), for
    settings a repository must not be trusted with (where to send the user's tokens)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    sources: list[Path] = []
    files = [user_config_path(env), *([project_dir / PROJECT_CONFIG] if with_project else [])]
    for path in files:
        layer = _read_file_layer(path, relative_label(path, project_dir))
        if layer is not None:
            sources.append(path)
            _deep_merge(merged, layer)
    _deep_merge(merged, env_layer(env))
    _deep_merge(merged, overrides_layer(overrides or {}))
    try:
        config = msgspec.convert(merged, Config, dec_hook=decode_hook)
    except msgspec.ValidationError as exc:
        # Every layer passed alone, so only a cross-layer check can land here.
        problem = describe_validation_error(exc, root_type=Config, data=merged)
        raise ConfigError(f"effective config: {problem.render()}") from None
    return LoadedConfig(config=config, sources=sources)


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain JSON-ready dict (durations in seconds), for recording in run.json."""
    result: dict[str, Any] = msgspec.to_builtins(config, enc_hook=seconds_hook)
    return result


def default_config_dict() -> dict[str, Any]:
    """Every key with its default, durations written as people write them ("30m"), for init."""
    result: dict[str, Any] = msgspec.to_builtins(Config(), enc_hook=human_duration_hook)
    return result


def _read_file_layer(path: Path, label: str) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None  # every config file is optional
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        return {}
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{label}: line {line}: not valid UTF-8") from None
    try:
        layer = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{label}: {_json_error(data, str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{label}: invalid JSON: nested too deeply") from None
    if b"\\u0000" in data and (at := nul_character_at(layer)) is not None:
        raise ConfigError(f"{label}: {at}: contains a NUL character (\\u0000)")
    _validate(layer, label)
    assert isinstance(layer, dict)  # _validate checked it is a JSON object
    return layer


def _json_error(data: bytes, message: str) -> str:
    offset, detail = json_error_parts(message)
    line = data[: len(data) if offset is None else offset].count(b"\n") + 1
    return f"line {line}: invalid JSON: {detail}"


def _validate(layer: object, label: str) -> None:
    try:
        msgspec.convert(layer, Config, dec_hook=decode_hook)
    except msgspec.ValidationError as exc:
        problem = describe_validation_error(exc, root_type=Config, data=layer)
        raise ConfigError(f"{label}: {problem.render()}") from None


def _deep_merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Merge ``layer`` over ``into``: objects merge key by key, anything else replaces."""
    for key, value in layer.items():
        current = into.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            _deep_merge(current, value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _nested(dotted: str, value: object) -> dict[str, Any]:
    """``("loop.on_failure", "retry")`` → ``{"loop": {"on_failure": "retry"}}``."""
    *parents, last = dotted.split(".")
    node: dict[str, Any] = {last: value}
    for name in reversed(parents):
        node = {name: node}
    return node


# --- environment ----------------------------------------------------------------------------


def _whole_number(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _dollars(text: str) -> float:
    try:
        return float(text.strip().removeprefix("$"))
    except ValueError:
        raise ValueError(
            f"expected an amount of US dollars such as 5 or 2.50, got {text!r}"
        ) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(f"expected {ACCEPTED_FORMS}, got {text!r}") from None


def _harness(text: str) -> str | None:
    # "auto" lets the environment undo a harness pinned in a config file.
    return None if text.strip() == "auto" else text.strip()


def _text(text: str) -> str:
    return text


ENV_VARS: dict[str, tuple[str, Callable[[str], object]]] = {
    "CUB_HARNESS": ("harness.name", _harness),
    "CUB_MODEL": ("harness.model", _text),
    "CUB_HARNESS_CMD": ("harness.command", _text),
    "CUB_ON_FAILURE": ("loop.on_failure", str.strip),
    "CUB_MAX_ATTEMPTS": ("loop.max_attempts", _whole_number),
    "CUB_MAX_ITERATIONS": ("loop.max_iterations", _whole_number),
    "CUB_TASK_TIMEOUT": ("loop.task_timeout", _duration),
    "CUB_IDLE_TIMEOUT": ("loop.idle_timeout", _duration),
    "CUB_GRACE": ("loop.grace", _duration),
    "CUB_TIMEOUT": ("loop.timeout", _duration),
    "CUB_BUDGET": ("budget.cost_usd", _dollars),
    "CUB_BUDGET_TOKENS": ("budget.tokens", _whole_number),
    "CUB_BUDGET_TASKS": ("budget.tasks", _whole_number),
    "CUB_BACKEND": ("backend.mode", str.strip),
}


def env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    """The config layer set by ``CUB_*`` variables; an empty variable counts as unset."""
    layer: dict[str, Any] = {}
    for name, (dotted, parse) in ENV_VARS.items():
        raw = env.get(name, "")
        if not raw.strip():
            continue
        try:
            value = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        _validate_one(dotted, value, name)
        _deep_merge(layer, _nested(dotted, value))
    return layer


def overrides_layer(overrides: Mapping[str, object]) -> dict[str, Any]:
    """The layer built from flags; a value of None means "flag not given" and is skipped."""
    layer: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        _validate_one(dotted, value, f"command line: {dotted}")
        _deep_merge(layer, _nested(dotted, value))
    return layer


def _validate_one(dotted: str, value: object, label: str) -> None:
    single = _nested(dotted, value)
    try:
        msgspec.convert(single, Config, dec_hook=decode_hook)
    except msgspec.ValidationError as exc:
        problem = describe_validation_error(exc, root_type=Config, data=single)
        # The label already names the setting, so only the problem itself is repeated.
        text = problem.render() if problem.unknown_key else problem.text
        raise ConfigError(f"{label}: {text}") from None
