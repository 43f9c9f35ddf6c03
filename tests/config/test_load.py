from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from cub.config.load import config_to_dict, default_config_dict, load_config
from cub.config.schema import Config
from cub.errors import ConfigError, Rejected


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".cub").mkdir(parents=True)
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def user_file(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "cub" / "config.json"


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def project_file(project: Path, data: object) -> Path:
    return write_json(project / ".cub" / "config.json", data)


def test_no_files_means_defaults(project: Path, env: dict[str, str]) -> None:
    loaded = load_config(project, env=env)
    assert loaded.config == Config()
    assert loaded.sources == []
    assert loaded.config.loop.on_failure == "stop"
    assert loaded.config.loop.max_attempts == 3
    assert loaded.config.loop.grace == 10.0
    assert loaded.config.loop.task_timeout == 1800.0
    assert loaded.config.loop.idle_timeout == 600.0
    assert loaded.config.hooks.timeout == 60.0
    assert loaded.config.harness.priority == ["claude", "codex", "opencode", "gemini"]
    assert loaded.config.branch.protected == ["main", "master"]


def test_layers_apply_user_then_project_then_env_then_overrides(
    project: Path, env: dict[str, str]
) -> None:
    write_json(
        user_file(env),
        {
            "loop": {"on_failure": "continue", "max_attempts": 5, "grace": "20s", "verify": ["u"]},
            "harness": {"model": "user-model"},
        },
    )
    project_file(project, {"loop": {"on_failure": "retry", "grace": 30}})
    env |= {"CUB_GRACE": "40s", "CUB_MODEL": "env-model"}
    loaded = load_config(project, env=env, overrides={"loop.grace": "50s", "harness.model": None})
    loop = loaded.config.loop
    assert loop.max_attempts == 5  # only the user file sets it
    assert loop.verify == ["u"]
    assert loop.on_failure == "retry"  # project beats user
    assert loaded.config.harness.model == "env-model"  # env beats files; None override skipped
    assert loop.grace == 50.0  # overrides beat everything
    assert loaded.sources == [user_file(env), project / ".cub" / "config.json"]


def test_env_beats_project(project: Path, env: dict[str, str]) -> None:
    project_file(project, {"loop": {"on_failure": "retry", "max_attempts": 2}})
    loaded = load_config(project, env=env | {"CUB_ON_FAILURE": "continue"})
    assert loaded.config.loop.on_failure == "continue"
    assert loaded.config.loop.max_attempts == 2


def test_objects_merge_key_by_key_across_layers(project: Path, env: dict[str, str]) -> None:
    write_json(user_file(env), {"harness": {"env": {"A": "1", "B": "user"}}})
    project_file(project, {"harness": {"env": {"B": "project", "C": "3"}}})
    assert load_config(project, env=env).config.harness.env == {"A": "1", "B": "project", "C": "3"}


def test_user_config_falls_back_to_home(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "h"
    write_json(home / ".config" / "cub" / "config.json", {"loop": {"max_attempts": 7}})
    loaded = load_config(project, env={"HOME": str(home)})
    assert loaded.config.loop.max_attempts == 7


def test_every_env_var(project: Path, env: dict[str, str]) -> None:
    env |= {
        "CUB_HARNESS": "command",
        "CUB_HARNESS_CMD": "./agent.sh --fast",
        "CUB_MODEL": "m1",
        "CUB_ON_FAILURE": "retry",
        "CUB_MAX_ATTEMPTS": "4",
        "CUB_MAX_ITERATIONS": "9",
        "CUB_BUDGET": "2.50",
        "CUB_BUDGET_TOKENS": "100000",
        "CUB_BUDGET_TASKS": "3",
        "CUB_TASK_TIMEOUT": "5m",
        "CUB_IDLE_TIMEOUT": "90",
        "CUB_GRACE": "500ms",
        "CUB_TIMEOUT": "1h30m",
        "CUB_BACKEND": "prd",
    }
    config = load_config(project, env=env).config
    assert config.harness.name == "command"
    assert config.harness.command == "./agent.sh --fast"
    assert config.harness.model == "m1"
    assert (config.loop.on_failure, config.loop.max_attempts, config.loop.max_iterations) == (
        "retry",
        4,
        9,
    )
    assert (config.budget.cost_usd, config.budget.tokens, config.budget.tasks) == (2.5, 100000, 3)
    assert (config.loop.task_timeout, config.loop.idle_timeout) == (300.0, 90.0)
    assert (config.loop.grace, config.loop.timeout) == (0.5, 5400.0)
    assert config.backend.mode == "prd"


def test_empty_env_var_is_unset_and_auto_clears_harness(project: Path, env: dict[str, str]) -> None:
    project_file(project, {"harness": {"name": "codex"}})
    config = load_config(project, env=env | {"CUB_MAX_ATTEMPTS": "", "CUB_HARNESS": "auto"}).config
    assert config.loop.max_attempts == 3
    assert config.harness.name is None


def test_unknown_key_names_file_and_path(project: Path, env: dict[str, str]) -> None:
    project_file(project, {"loop": {"on_falure": "retry"}})
    with pytest.raises(ConfigError) as caught:
        load_config(project, env=env)
    message = str(caught.value)
    assert message.startswith(".cub/config.json: unknown key $.loop.on_falure")
    assert "on_failure" in message  # the suggestion
    assert "\n" not in message


def test_unknown_section(project: Path, env: dict[str, str]) -> None:
    project_file(project, {"lop": {}})
    with pytest.raises(ConfigError, match=r"^\.cub/config\.json: unknown key \$\.lop"):
        load_config(project, env=env)


def test_bad_value_names_path_and_value(project: Path, env: dict[str, str]) -> None:
    project_file(project, {"loop": {"max_attempts": 0}})
    with pytest.raises(ConfigError) as caught:
        load_config(project, env=env)
    assert str(caught.value) == ".cub/config.json: $.loop.max_attempts: Expected int >= 1, got 0"
    assert caught.value.reason_code == "invalid_config"
    assert isinstance(caught.value, Rejected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"loop": {"max_attempts": "3"}}, "$.loop.max_attempts: Expected int, got str"),
        (
            {"loop": {"on_failure": "explode"}},
            "$.loop.on_failure: expected one of stop, continue, retry, got 'explode'",
        ),
        ({"loop": {"grace": "10 minutes"}}, "$.loop.grace: invalid duration '10 minutes'"),
        ({"budget": {"warn_at": 1.5}}, "$.budget.warn_at: Expected float <= 1"),
        ({"harness": {"extra_args": {"claud": []}}}, "$.harness.extra_args: invalid key"),
        ({"redaction": {"patterns": ["("]}}, "$.redaction: invalid regular expression '('"),
        ([1, 2], "$: Expected object, got array"),
    ],
)
def test_type_errors_name_the_path(
    project: Path, env: dict[str, str], data: object, expected: str
) -> None:
    project_file(project, data)
    with pytest.raises(ConfigError) as caught:
        load_config(project, env=env)
    assert str(caught.value).startswith(f".cub/config.json: {expected}")


def test_error_in_user_file_names_that_file(project: Path, env: dict[str, str]) -> None:
    path = write_json(user_file(env), {"sandbox": {"cpus": 0}})
    project_file(project, {"sandbox": {"cpus": 4}})  # valid, but the user file is still wrong
    with pytest.raises(ConfigError) as caught:
        load_config(project, env=env)
    assert str(caught.value).startswith(f"{path}: $.sandbox.cpus: Expected float > 0")


def test_invalid_json_names_the_line(project: Path, env: dict[str, str]) -> None:
    (project / ".cub" / "config.json").write_text('{\n  "loop": {\n    "grace": ,\n  }\n}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(project, env=env)
    assert str(caught.value).startswith(".cub/config.json: line 3: invalid JSON: ")


def test_truncated_json(project: Path, env: dict[str, str]) -> None:
    (project / ".cub" / "config.json").write_text('{\n  "loop": {\n')
    with pytest.raises(ConfigError, match=r"^\.cub/config\.json: line \d+: invalid JSON"):
        load_config(project, env=env)


def test_empty_file_is_an_empty_layer(project: Path, env: dict[str, str]) -> None:
    (project / ".cub" / "config.json").write_text("\n")
    assert load_config(project, env=env).config == Config()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CUB_MAX_ATTEMPTS", "x", "CUB_MAX_ATTEMPTS: expected a whole number, got 'x'"),
        ("CUB_MAX_ATTEMPTS", "0", "CUB_MAX_ATTEMPTS: Expected int >= 1, got 0"),
        ("CUB_BUDGET_TOKENS", "1.5", "CUB_BUDGET_TOKENS: expected a whole number, got '1.5'"),
        ("CUB_BUDGET", "lots", "CUB_BUDGET: expected an amount of US dollars"),
        ("CUB_GRACE", "soon", "CUB_GRACE: expected a number of seconds"),
        (
            "CUB_ON_FAILURE",
            "maybe",
            "CUB_ON_FAILURE: expected one of stop, continue, retry, got 'maybe'",
        ),
        ("CUB_HARNESS", "vim", "CUB_HARNESS: expected one of claude, codex"),
        ("CUB_BACKEND", "sql", "CUB_BACKEND: expected one of auto, jsonl, prd, beads"),
    ],
)
def test_bad_env_var(
    project: Path, env: dict[str, str], name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(project, env=env | {name: value})
    assert str(caught.value).startswith(expected)


def test_bad_override_names_the_key(project: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^command line: loop\.task_timeout: invalid duration"):
        load_config(project, env=env, overrides={"loop.task_timeout": "forever"})
    with pytest.raises(ConfigError, match=r"unknown key \$\.loop\.grac"):
        load_config(project, env=env, overrides={"loop.grac": "1s"})


def test_durations_accept_numbers_and_strings(project: Path, env: dict[str, str]) -> None:
    project_file(
        project,
        {
            "loop": {"grace": 5, "task_timeout": "1h30m", "timeout": "2h"},
            "hooks": {"timeout": "1.5s"},
        },
    )
    config = load_config(project, env=env).config
    assert config.loop.grace == 5.0
    assert config.loop.task_timeout == 5400.0
    assert config.loop.timeout == 7200.0
    assert config.hooks.timeout == 1.5
    assert isinstance(config.loop.grace, float)


def test_config_to_dict_is_plain_json_with_seconds(project: Path, env: dict[str, str]) -> None:
    project_file(
        project,
        {
            "loop": {"grace": "2m"},
            "budget": {"prices": {"m": {"input_per_mtok": 3, "output_per_mtok": 15}}},
        },
    )
    data = config_to_dict(load_config(project, env=env).config)
    assert data["loop"]["grace"] == 120.0
    assert type(data["loop"]["grace"]) is float
    assert data["budget"]["prices"]["m"]["output_per_mtok"] == 15
    json.dumps(data)  # nothing exotic left


def test_default_config_dict_loads_back_to_the_defaults(project: Path, env: dict[str, str]) -> None:
    defaults = default_config_dict()
    assert defaults["loop"]["task_timeout"] == "30m"  # written the way people write it
    project_file(project, defaults)
    assert load_config(project, env=env).config == Config()


def test_config_struct_is_strict() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"loop": {"nope": 1}}, Config)
