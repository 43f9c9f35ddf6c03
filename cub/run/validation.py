"""Everything `cub run` checks before any work, each failure a `Rejected` with one clear line.

The order follows what a user fixes first: the command line itself, then the project's files,
then the environment (git, harness, docker).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cub.agents.registry import KNOWN_HARNESSES, resolve_harness
from cub.config.load import load_config
from cub.durations import parse_duration
from cub.errors import BackendError, Rejected, one_line
from cub.lifecycle.plan import RunPlan
from cub.lifecycle.request import RunRequest
from cub.records.store import check_run_name, check_safe_name
from cub.tasks.backend import open_backend
from cub.tasks.direct import DirectBackend
from cub.workspace.git import current_branch, git, repo_root

if TYPE_CHECKING:
    from cub.config.schema import Config
    from cub.modes.github.issue import IssueRun
    from cub.tasks.backend import TaskBackend

# (flag, attribute) pairs that cannot be combined with --direct / --gh-issue.
_SELECTION_FLAGS = (
    ("--task", "task"),
    ("--epic", "epic"),
    ("--label", "label"),
    ("--ready", "ready"),
    ("--parallel", "parallel"),
)


def _given(request: RunRequest, attr: str) -> bool:
    value = getattr(request, attr)
    return value is not None and value is not False


def _conflicts(r: RunRequest) -> list[tuple[bool, str]]:
    """(broken, message) for each rule; the first broken rule is reported."""
    direct, issue = r.direct is not None, r.gh_issue is not None
    rules = [
        (
            r.no_network and not r.sandbox,
            "--no-network requires --sandbox (only a sandboxed run can be cut off the network)",
        ),
        (
            r.sandbox_keep and not r.sandbox,
            "--sandbox-keep requires --sandbox (there is no container to keep)",
        ),
        (
            r.worktree_keep and r.in_checkout,
            f"--worktree-keep cannot be used with {_in_checkout_flag(r)}: the run works in "
            "this checkout, there is no worktree to keep",
        ),
        (
            r.worktree and r.in_checkout,
            f"--worktree cannot be used with {_in_checkout_flag(r)}: one works in a worktree "
            "of its own, the other in this checkout",
        ),
        (
            r.allow_dirty and not r.in_checkout,
            "--allow-dirty requires --in-place: a run in its own worktree never sees this "
            "checkout's uncommitted changes",
        ),
        (
            r.in_place and r.sandbox,
            "--in-place cannot be used with --sandbox: a sandboxed run works in its container",
        ),
    ]
    for flag, attr in (*_SELECTION_FLAGS, ("--gh-issue", "gh_issue")):
        rules.append(
            (
                direct and _given(r, attr),
                f"--direct cannot be used with {flag}: a direct run has no backlog to select from",
            )
        )
    for flag, attr in _SELECTION_FLAGS:
        rules.append(
            (
                issue and _given(r, attr),
                f"--gh-issue cannot be used with {flag}: a GitHub-issue run works on "
                "that one issue",
            )
        )
    rules += [
        (
            r.once and r.parallel is not None,
            "--once cannot be used with --parallel: --once runs a single task",
        ),
        (
            r.ready and r.sandbox,
            "--ready cannot be used with --sandbox: a dry run starts no container",
        ),
        (
            r.ready and r.parallel is not None,
            "--ready cannot be used with --parallel: a dry run starts no workers",
        ),
        (
            r.from_branch is not None and r.use_current_branch,
            "--from-branch cannot be used with --use-current-branch: one makes a new branch "
            "from REF, the other stays on the current one",
        ),
        (
            r.engine == "swarm" and not (r.sandbox and r.parallel is not None),
            "--engine swarm requires --parallel N --sandbox: the swarm runs sandboxed children",
        ),
        (
            r.remote is not None and r.engine != "swarm",
            "--remote requires --engine swarm (only swarm children clone from a remote)",
        ),
        (
            r.engine == "swarm" and (r.no_network or r.sandbox_keep),
            f"{'--no-network' if r.no_network else '--sandbox-keep'} cannot be used with "
            "--engine swarm: its children clone and push over the network, and its services "
            "are removed when they end",
        ),
        (
            (r.clone_url is None) != (r.clone_ref is None)
            or (r.clone_url is not None and r.parent_run_id is None),
            "--clone-url and --clone-ref go together, on a child run (--parent-run-id)",
        ),
        (
            r.harness_cmd is not None and r.harness not in (None, "command"),
            f"--harness-cmd cannot be used with --harness {r.harness}: --harness-cmd is the "
            "command line of the `command` harness",
        ),
    ]
    return rules


def _in_checkout_flag(r: RunRequest) -> str:
    return "--in-place" if r.in_place else "--use-current-branch"


def check_flag_conflicts(r: RunRequest) -> None:
    for broken, message in _conflicts(r):
        if broken:
            raise Rejected("flag_conflict", message)


def check_harness_name(r: RunRequest) -> None:
    """An unknown ``--harness`` is named as the flag, before config layering sees it."""
    if r.harness is not None and r.harness not in KNOWN_HARNESSES:
        raise Rejected(
            "unknown_harness",
            f"--harness {r.harness!r} is not a known harness "
            f"(choose one of: {', '.join(KNOWN_HARNESSES)})",
        )


def undecodable_argument(argv: Sequence[str]) -> Rejected | None:
    """The rejection for the first argument that is not valid UTF-8 (Python hands such bytes
    over as lone surrogates, which no record, file name or agent could take), naming its flag."""
    for index, arg in enumerate(argv):
        if printable_argument(arg) == arg:
            continue
        flag, _, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if not value and not arg.startswith("-") and index > 0:
            flag = argv[index - 1] if argv[index - 1].startswith("-") else "an argument"
        shown = printable_argument(arg)
        return Rejected("invalid_flag", f"{printable_argument(flag)}: {shown!r} is not valid UTF-8")
    return None


def printable_argument(arg: str) -> str:
    try:
        data = arg.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = arg.encode("utf-8", "replace")
    return data.decode("utf-8", "replace")


def check_values(r: RunRequest) -> None:
    check_harness_name(r)
    if r.name is not None:
        check_run_name(r.name, "--name")
    if r.task is not None:
        check_safe_name(r.task, "task id (--task)")
    for flag, value in (
        ("--timeout", r.timeout),
        ("--task-timeout", r.task_timeout),
        ("--idle-timeout", r.idle_timeout),
        ("--grace", r.grace),
    ):
        if value is not None:
            try:
                parse_duration(value)
            except ValueError as exc:
                raise Rejected("invalid_flag", f"{flag} {value!r}: {exc}") from exc
    if r.repo is not None:
        from cub.modes.github.issue import check_repo_flag  # only --gh-issue runs load it

        check_repo_flag(r.repo)


def config_overrides(r: RunRequest) -> dict[str, Any]:
    """Flags that override config keys, as dotted keys."""
    pairs: dict[str, Any] = {
        "harness.name": r.harness,
        "harness.command": r.harness_cmd,
        "harness.model": r.model,
        "loop.max_iterations": r.max_iterations,
        "loop.on_failure": r.on_failure,
        "loop.timeout": r.timeout,
        "loop.task_timeout": r.task_timeout,
        "loop.idle_timeout": r.idle_timeout,
        "loop.grace": r.grace,
        "budget.cost_usd": r.budget,
        "budget.tokens": r.budget_tokens,
        "budget.tasks": r.budget_tasks,
        "github.repo": r.repo,
    }
    overrides = {k: v for k, v in pairs.items() if v is not None}
    if r.no_hooks:
        overrides["hooks.enabled"] = False
    if r.no_circuit_breaker:
        overrides["loop.circuit_breaker"] = False
    if r.no_network:
        overrides["sandbox.network"] = False
    if r.engine is not None:
        overrides["sandbox.engine"] = r.engine
    return overrides


def read_direct_prompt(spec: str, stdin: Any = None) -> str:
    stdin = stdin if stdin is not None else sys.stdin
    if spec == "-":
        if stdin is None or stdin.isatty():
            raise Rejected(
                "invalid_direct_input",
                "--direct - reads the prompt from stdin, but stdin is a terminal; "
                "pipe the prompt in or pass --direct TEXT or --direct @FILE",
            )
        text = stdin.read()
        source = "stdin"
    elif spec.startswith("@"):
        path = Path(spec[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise Rejected(
                "invalid_direct_input", f"--direct {spec}: no such file {path}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise Rejected(
                "invalid_direct_input", f"--direct {spec}: cannot read {path}: {exc}"
            ) from exc
        source = str(path)
    else:
        text, source = spec, "the command line"
    if not text.strip():
        raise Rejected("invalid_direct_input", f"--direct: the prompt from {source} is empty")
    return text


def _needs_backend(r: RunRequest) -> bool:
    return r.direct is None and r.gh_issue is None


def _needs_git(r: RunRequest) -> bool:
    return not r.ready and (r.direct is None or r.worktree)


def _needs_harness(r: RunRequest) -> bool:
    return not r.ready


def check_clean_checkout(r: RunRequest, git_root: Path, backlog: Path | None) -> None:
    """A run in this checkout must not carry the user's uncommitted changes onto its branch:
    refused unless --allow-dirty (then they stay where they are, and may end up in the agent's
    commits). The backlog file is cub's own and does not count."""
    if not r.in_checkout or r.allow_dirty or r.ready:
        return

    # Tracked files that differ from HEAD, staged or not (none to compare with: the staged ones).
    out = git(git_root, "diff", "--name-only", "-z", "HEAD", "--", check=False) or git(
        git_root, "diff", "--cached", "--name-only", "-z", check=False
    )
    own = str(backlog.resolve().relative_to(git_root.resolve())) if backlog else None
    changed = [path for path in out.split("\0") if path and path != own]
    if changed:
        shown = ", ".join(changed[:3]) + (
            f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        raise Rejected(
            "dirty_worktree",
            f"{_in_checkout_flag(r)}: tracked files have uncommitted changes ({shown}); commit "
            "or stash them, pass --allow-dirty, or drop the flag to work in a worktree of its own",
        )


def check_branch(r: RunRequest, git_root: Path, protected: list[str]) -> None:
    if not r.use_current_branch or r.main_ok:
        return

    branch = current_branch(git_root)
    if branch in protected:
        raise Rejected(
            "main_branch",
            f"--use-current-branch would run on {branch!r}; pass --main-ok to allow work "
            f"directly on {branch}, or drop --use-current-branch to work on a new branch",
        )


def check_docker() -> None:
    from cub.modes.sandbox.container import answering_client  # only sandbox runs pay for it

    try:
        answering_client(5)
    except Exception as exc:
        host = os.environ.get("DOCKER_HOST")
        where = f"DOCKER_HOST={host}" if host else "the default socket (DOCKER_HOST is not set)"
        raise Rejected(
            "docker_unavailable",
            f"--sandbox needs a Docker engine, and none answered at {where}: {one_line(exc)}",
        ) from exc


def is_swarm_run(r: RunRequest, config: Config) -> bool:
    """Children as swarm services: `--parallel N --sandbox` with the swarm engine."""
    return r.sandbox and r.parallel is not None and config.sandbox.engine == "swarm"


def check_swarm(r: RunRequest, git_root: Path, backlog: Path | None) -> None:
    """DOCKER_HOST is a swarm manager, there is a remote, and the children's clone of it will
    hold the backlog as it is here."""
    from cub.modes.swarm.engine import swarm_manager_problem  # only swarm runs load it

    problem = swarm_manager_problem()
    if problem is not None:
        raise Rejected("docker_unavailable", f"--engine swarm: {problem}")
    if r.remote is None and not git(git_root, "remote", "get-url", "origin", check=False):
        raise Rejected(
            "invalid_flag",
            "--engine swarm needs a git remote every node can reach: pass --remote URL, or "
            "give this repository an origin",
        )
    if backlog is None:
        return
    own = str(backlog.resolve().relative_to(git_root.resolve()))
    tracked = git(git_root, "ls-files", "--", own, check=False)
    changed = git(git_root, "status", "--porcelain", "--", own, check=False)
    if not tracked or changed:
        raise Rejected(
            "dirty_worktree",
            f"--engine swarm: commit {own} first (the children clone the repository, and "
            "find their tasks in it)",
        )


def _checked_backend(r: RunRequest, project_dir: Path, config: Config) -> TaskBackend:
    """The project's backlog, read once: it parses, and holds the task ``--task`` names."""
    backend = open_backend(project_dir, config)
    try:
        tasks = backend.load()
    except BackendError as exc:
        # Only beads is read through a program: what it answered is the backlog.
        raise Rejected("invalid_task_file", f"{backend.describe()}: {exc}") from None
    if r.task is not None and not any(t.id == r.task for t in tasks):
        raise Rejected("task_not_found", f"--task {r.task}: no such task in {backend.describe()}")
    return backend


def validate(
    r: RunRequest, project_dir: Path, env: Mapping[str, str], stdin: Any = None
) -> tuple[RunPlan, IssueRun | None]:
    """Check the whole invocation; returns the plan (and a --gh-issue run's issue as fetched,
    or the API error its preparation turns into a failure) or raises `Rejected`."""
    check_flag_conflicts(r)
    check_values(r)
    loaded = load_config(project_dir, env=env, overrides=config_overrides(r))
    config = loaded.config
    direct_prompt = read_direct_prompt(r.direct, stdin) if r.direct is not None else None

    git_root = repo_root(project_dir)
    if git_root is None and _needs_git(r):
        raise Rejected(
            "not_a_git_repo",
            f"{project_dir} is not a git repository: cub commits each task's work "
            "on a branch (run `git init`, or use --ready / --direct)",
        )
    if git_root is not None and not r.ready:
        check_branch(r, git_root, list(config.branch.protected))

    backend: TaskBackend | None = None
    if direct_prompt is not None:
        backend = DirectBackend(direct_prompt)
    elif _needs_backend(r):
        backend = _checked_backend(r, project_dir, config)

    if git_root is not None:
        check_clean_checkout(r, git_root, backend.path if _needs_backend(r) and backend else None)

    harness = None
    if _needs_harness(r):
        try:
            harness = resolve_harness(
                config.harness.name,
                config.harness.command,
                list(config.harness.priority),
                env.get("PATH"),
            )
        except Rejected as exc:
            # A sandboxed agent runs in the container: the image is where it must be installed,
            # and the run inside checks that.
            if not (r.sandbox and exc.reason_code == "harness_not_found"):
                raise
    if r.sandbox:
        check_docker()
    if is_swarm_run(r, config):
        assert git_root is not None and backend is not None
        check_swarm(r, git_root, backend.path)
    issue = None
    if r.gh_issue is not None:
        from cub.modes.github.issue import fetch_issue  # (as above)

        # Last: the only check that goes over the network.
        issue = fetch_issue(r.gh_issue, git_root, config, env)
        backend, direct_prompt = issue.backend, issue.prompt
    plan = RunPlan(
        request=r,
        project_dir=project_dir,
        config=config,
        config_sources=[str(source) for source in loaded.sources],
        git_root=git_root,
        backend=backend,
        harness=harness,
        direct_prompt=direct_prompt,
    )
    return plan, issue
