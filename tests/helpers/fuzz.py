"""Fuzzing cub's input: mutated configs, task files (JSONL, prd.json, beads output), flag sets
and argv bytes, each thrown at cub and checked against what bad input must never do.

Run as its own process (``python -m tests.helpers.fuzz KIND EXAMPLES SEED [REAL_EVERY]``), by
the test suite with a few hundred seeded examples per kind and by ``tools/soak/fuzz_input.py``
with thousands. ``cub`` is called in that process (a dry run, ``cub run --ready``, costs ~20 ms
there instead of ~200 ms for a new interpreter), which makes it a subreaper with cub's signal
handlers (stop it with SIGKILL), so it must not be the test runner's own. Every tenth example of
a config or a task file (``REAL_EVERY``) is also run for real (``cub run --once`` with an agent
that does nothing) in a process of its own.

For every example: no exception escapes and no traceback is printed; the exit code is one of
cub's; a run that was recorded has a run.json that parses and is never ``exception``; the task
file is byte for byte what it was (a run never writes it); nothing appears beside the project.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from cub.config.schema import Config
from cub.records.location import runs_dir
from cub.records.schemas import RunRecord
from tests.helpers.env import isolate_environment
from tests.helpers.git import make_repo

EXIT_CODES = {0, 1, 2, 3, 130, 137, 143}
KINDS = ("configs", "tasks", "prd", "beads", "flags", "argv")
REAL_RUN_EVERY = 10

# --------------------------------------------------------------------------------- strategies

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
_NASTY = st.sampled_from(
    [
        "",
        " ",
        "\u0000",
        "a\u0000b",
        "\x1b]0;x\x07",
        "\u202e",
        "..",
        "../../x",
        "/etc/passwd",
        "-1",
        "0",
        "1e309",
        "NaN",
        "latest",
        ".hidden",
        "x" * 300,
        "10s",
        "-5m",
        "P9",
        "(?i)x",
        "a*",
        "[",
        "${HOME}",
        "$(touch pwned)",
        "true",
        "claude",
        "command",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
    _NASTY,
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(_TEXT, _NASTY), inner, max_size=4)
    ),
    max_leaves=12,
)


_DEEP = "\u2063deep:"  # stands for a nesting too deep for the json module to write


def _deep(levels: int) -> str:
    return f"{_DEEP}{levels}"


_VALUES = st.one_of(_JSON, _JSON, st.integers(900, 3000).map(_deep))


def _config_keys() -> list[tuple[str, list[str]]]:
    sections = []
    for section in msgspec.structs.fields(Config):
        sub = section.type
        names = [f.name for f in msgspec.structs.fields(sub)] if isinstance(sub, type) else []
        sections.append((section.name, names))
    return sections


_SECTIONS = _config_keys()


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, keys in draw(st.lists(st.sampled_from(_SECTIONS), max_size=4)):
        section = document.setdefault(name, {})
        for key in draw(st.lists(st.sampled_from(keys or ["x"]), max_size=3)):
            section[key] = draw(_VALUES)
    if draw(st.booleans()):
        document[draw(_TEXT)] = draw(_VALUES)
    return document


_TASK_KEYS = [
    "id",
    "title",
    "status",
    "priority",
    "dependsOn",
    "depends_on",
    "dependencies",
    "labels",
    "parent",
    "issue_type",
    "description",
    "acceptance_criteria",
    "attempts",
    "assignee",
    "notes",
    "close_reason",
]
_IDS = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True), _NASTY, _TEXT)


@st.composite
def task_objects(draw: st.DrawFn) -> dict[str, Any]:
    task: dict[str, Any] = {"id": draw(_IDS), "title": draw(st.one_of(_TEXT, _NASTY))}
    for key in draw(st.lists(st.sampled_from(_TASK_KEYS), max_size=4)):
        task[key] = draw(st.one_of(_VALUES, _IDS, st.lists(_IDS, max_size=3)))
    if draw(st.booleans()):
        task.pop(draw(st.sampled_from(["id", "title"])), None)
    return task


def _encode(value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=False)
    while _DEEP in text:
        start = text.index('"' + _DEEP)
        end = text.index('"', start + 1)
        levels = int(text[start + len(_DEEP) + 1 : end])
        text = text[:start] + "[" * levels + "1" + "]" * levels + text[end + 1 :]
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte-level injuries: bytes inserted or replaced, or cut short."""
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, len(data)))
        piece = draw(
            st.one_of(
                st.binary(max_size=3),
                st.sampled_from([b"\xff", b"\\u0000", b'"', b"{", b"\n", b"\xc3", b"]" * 5]),
            )
        )
        cut = draw(st.integers(0, 2))
        data = data[:where] + piece + data[where + cut :]
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def task_files(draw: st.DrawFn) -> bytes:
    tasks = draw(st.lists(task_objects(), min_size=1, max_size=5))
    data = b"".join(_encode(task) + b"\n" for task in tasks)
    return draw(mutated(data)) if draw(st.booleans()) else data


@st.composite
def prd_files(draw: st.DrawFn) -> bytes:
    root: Any = {"project": draw(_TEXT), "tasks": draw(st.lists(task_objects(), max_size=4))}
    if draw(st.integers(0, 4)) == 0:
        root = draw(_VALUES)
    data = _encode(root)
    return draw(mutated(data)) if draw(st.booleans()) else data


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    data = _encode(draw(config_documents()))
    return draw(mutated(data)) if draw(st.booleans()) else data


_VALUE_FLAGS = [
    "-t",
    "--task",
    "-e",
    "--epic",
    "-l",
    "--label",
    "-n",
    "--name",
    "-m",
    "--model",
    "--budget",
    "--budget-tokens",
    "--budget-tasks",
    "--max-iterations",
    "--timeout",
    "--task-timeout",
    "--idle-timeout",
    "--grace",
    "--on-failure",
    "--parallel",
    "--from-branch",
    "-H",
    "--harness",
    "--harness-cmd",
    "--direct",
    "--repo",
]
_SWITCHES = [
    "--once",
    "--in-place",
    "--allow-dirty",
    "--worktree",
    "--worktree-keep",
    "--use-current-branch",
    "--main-ok",
    "--no-hooks",
    "--no-circuit-breaker",
    "--stream",
    "--quiet",
    "--verbose",
    "--json",
    "--",
    "-",
]


@st.composite
def flag_sets(draw: st.DrawFn) -> list[str]:
    args: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            args.append(draw(st.sampled_from(_SWITCHES)))
        else:
            flag = draw(st.sampled_from(_VALUE_FLAGS))
            value = draw(st.one_of(_TEXT, _NASTY, st.integers(-(10**20), 10**20).map(str)))
            args += [f"{flag}={value}"] if draw(st.booleans()) else [flag, value]
    return [*args, "--ready"]


_COMMANDS = [["run", "--ready"], ["tasks", "list"], ["tasks", "show"], ["runs", "list"], ["status"]]


@st.composite
def argv_bytes(draw: st.DrawFn) -> list[str]:
    command = list(draw(st.sampled_from(_COMMANDS)))
    extra = draw(st.lists(st.binary(min_size=1, max_size=12), max_size=4))
    return command + [os.fsdecode(arg.replace(b"\0", b"")) or "x" for arg in extra]


# ------------------------------------------------------------------------------------ checking


@dataclass
class Sandbox:
    """A scratch root holding one git project, a home, and a `bd` stand-in."""

    root: Path
    problems: list[str] = field(default_factory=list)
    examples: int = 0

    @property
    def project(self) -> Path:
        return self.root / "project"

    @classmethod
    def create(cls) -> Sandbox:
        root = Path(tempfile.mkdtemp(prefix="cub-fuzz-"))
        isolate_environment(root / "home")
        make_repo(root / "project")
        (root / "project" / ".cub").mkdir()
        bin_dir = root / "home" / "bin"
        bin_dir.mkdir()
        bd = bin_dir / "bd"
        bd.write_text(
            '#!/bin/sh\ncase "$1" in list|show) cat .beads/answer.json ;; *) echo "{}" ;; esac\n'
        )
        bd.chmod(0o755)
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        return cls(root)

    def reset(self, files: dict[str, bytes]) -> None:
        cub = self.project / ".cub"
        for stale in (cub / "config.json", cub / "tasks.jsonl", self.project / "prd.json"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(self.project / ".beads", ignore_errors=True)
        # Each example starts from no records: thousands of runs would make every start's
        # recovery scan (one look per run directory) the cost of the fuzz.
        shutil.rmtree(runs_dir(self.project).parent, ignore_errors=True)
        for name, data in files.items():
            path = self.project / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def check(self, args: list[str], files: dict[str, bytes], *, real: bool = False) -> None:
        """Run ``cub ARGS`` on a project holding ``files`` and note anything bad input must
        never cause."""
        self.examples += 1
        self.reset(files)
        watched = {name: data for name, data in files.items() if name != ".cub/config.json"}
        around = sorted(os.listdir(self.root))
        runs_before = self._runs()
        code, err, raised = (self._run_process if real else self._run_here)(args)
        shown = f"cub {' '.join(args)!r} with {sorted(files)}"
        if raised is not None:
            self.problems.append(f"{shown}: raised {raised}")
        if code not in EXIT_CODES:
            self.problems.append(f"{shown}: exit code {code}")
        if "Traceback" in err:
            self.problems.append(f"{shown}: printed a traceback: {err[-600:]}")
        for run_id in sorted(self._runs() - runs_before):
            self._check_record(run_id, shown)
        for name, data in watched.items():
            path = self.project / name
            if not path.is_file() or path.read_bytes() != data:
                self.problems.append(f"{shown}: {name} was changed")
        if sorted(os.listdir(self.root)) != around:
            self.problems.append(f"{shown}: wrote beside the project: {os.listdir(self.root)}")

    def _runs(self) -> set[str]:
        try:
            return set(os.listdir(runs_dir(self.project))) - {"latest"}
        except FileNotFoundError:
            return set()

    def _check_record(self, run_id: str, shown: str) -> None:
        path = runs_dir(self.project) / run_id / "run.json"
        try:
            record = msgspec.json.decode(path.read_bytes(), type=RunRecord)
        except (OSError, msgspec.DecodeError) as exc:
            self.problems.append(f"{shown}: run.json of {run_id} does not parse: {exc}")
            return
        if record.reason_code == "exception":
            self.problems.append(f"{shown}: ended as a cub bug: {record.reason}")

    def _run_here(self, args: list[str]) -> tuple[int | None, str, str | None]:
        from cub.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        previous_cwd, previous_argv = os.getcwd(), sys.argv
        os.chdir(self.project)
        sys.argv = ["cub", *args]
        code: int | None = None
        raised = None
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # what the user would see as a traceback
            raised = f"{type(exc).__name__}: {exc}"
        finally:
            os.chdir(previous_cwd)
            sys.argv = previous_argv
        return code, err.getvalue(), raised

    def _run_process(self, args: list[str]) -> tuple[int | None, str, str | None]:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "cub", *args],
                cwd=self.project,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return None, "", "did not finish in 60 s"
        return done.returncode, done.stderr, None


REAL = ["run", "--once", "-H", "command", "--harness-cmd", "true"]


def _without_commands(data: bytes) -> bytes | None:
    """A config that names no command to run (a real run must not run fuzzed shell text)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(document, dict):
        return data
    for section, key in (("loop", "verify"), ("harness", "command")):
        part = document.get(section)
        if isinstance(part, dict):
            part.pop(key, None)
    return json.dumps(document).encode()


def run_kind(
    kind: str, examples: int, seed_value: int, box: Sandbox, real_every: int = REAL_RUN_EVERY
) -> None:
    """Throw ``examples`` generated inputs of ``kind`` at cub; problems land in ``box``."""
    tests: dict[str, Callable[..., None]] = {}
    budget = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )

    def real_turn() -> bool:
        return box.examples % real_every == real_every - 1

    @budget
    @given(config_files())
    def configs(data: bytes) -> None:
        files = {".cub/config.json": data, ".cub/tasks.jsonl": b'{"id": "a", "title": "A"}\n'}
        if real_turn():
            files[".cub/config.json"] = _without_commands(data) or b""
            box.check(REAL, files, real=True)
        else:
            box.check(["run", "--ready"], files)

    @budget
    @given(task_files())
    def tasks(data: bytes) -> None:
        files = {".cub/tasks.jsonl": data}
        if real_turn():
            box.check(REAL, files, real=True)
        else:
            box.check(["run", "--ready"], files)
            box.check(["tasks", "list"], files)

    @budget
    @given(prd_files())
    def prd(data: bytes) -> None:
        config = b'{"backend": {"mode": "prd"}}'
        box.check(["run", "--ready"], {"prd.json": data, ".cub/config.json": config})

    @budget
    @given(st.one_of(prd_files(), task_files()))
    def beads(data: bytes) -> None:
        # What `bd list --json` prints; the issues are a JSON array (or anything else).
        files = {".beads/answer.json": data, ".cub/config.json": b'{"backend": {"mode": "beads"}}'}
        box.check(["run", "--ready"], files)

    @budget
    @given(flag_sets())
    def flags(args: list[str]) -> None:
        box.check(["run", *args], {".cub/tasks.jsonl": b'{"id": "a", "title": "A"}\n'})

    @budget
    @given(argv_bytes())
    def argv(args: list[str]) -> None:
        box.check(args, {".cub/tasks.jsonl": b'{"id": "a", "title": "A"}\n'})

    tests.update(configs=configs, tasks=tasks, prd=prd, beads=beads, flags=flags, argv=argv)
    seed(seed_value)(tests[kind])()


def main() -> int:
    kind, examples, seed_value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    real_every = int(sys.argv[4]) if len(sys.argv) > 4 else REAL_RUN_EVERY
    box = Sandbox.create()
    try:
        run_kind(kind, examples, seed_value, box, real_every)
    finally:
        shutil.rmtree(box.root, ignore_errors=True)
    print(f"{kind}: {box.examples} checks, {len(box.problems)} problems")
    for problem in box.problems[:20]:
        print(f"  {problem}")
    return 1 if box.problems else 0


if __name__ == "__main__":
    sys.exit(main())
