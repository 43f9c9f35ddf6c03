"""The exit-path audit: every way a run can end, derived from the chart, and a scan for code
that ends the process anywhere but the one place a terminal state becomes an exit code."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from cub.chart.definition import Chart, Edge
from cub.chart.exit_codes import exit_code_for

# States an edge may leave while an agent attempt is in flight, so the attempt's record exists.
ATTEMPT_STATES = frozenset({"executing", "settling", "stopping"})


class ExitRow(NamedTuple):
    edge: Edge
    reason_code: str | None


class SeedGap(NamedTuple):
    """A gap the seed audit found, and the chart rows that now cover it."""

    gap: str
    seed: str
    now: str
    rows: tuple[tuple[str, str], ...]  # (trigger, reason_code) pairs that must exist


SEED_GAPS = (
    SeedGap(
        "Direct mode",
        "prompt.md and harness.log only; no run.json",
        "a `direct` run of the same machine, with full artifacts under `tasks/direct/`",
        (
            ("reject", "invalid_direct_input"),
            ("finish", "task_done"),
            ("stop_on_failure", "task_failed"),
        ),
    ),
    SeedGap(
        "GH-issue mode",
        "prompt.md and harness.log only; no run.json",
        "a `gh-issue` run of the same machine, with the same artifacts as any other run",
        (("finish", "task_done"), ("stop_on_failure", "task_failed")),
    ),
    SeedGap(
        "Sandbox mode",
        "no run.json on the host",
        "the host run is a run of the machine; the container's run is its child, copied back",
        (("reject", "docker_unavailable"), ("stop_on_failure", "task_failed")),
    ),
    SeedGap(
        "Parallel mode",
        "per-worker logs only; no unified run.json",
        "the parent run aggregates its child runs into one run.json",
        (("finish", "all_tasks_done"), ("finish_failed", "tasks_failed")),
    ),
    SeedGap(
        "Pre-loop hook failure",
        "exited before the `finally`; status.json at most",
        "fires `setup_failed` from `preparing`",
        (("setup_failed", "hook_failed"),),
    ),
    SeedGap(
        "Force SIGINT (second Ctrl+C)",
        "`sys.exit(130)` in the signal handler bypassed the `finally`",
        "the handler only raises; the driver fires `force_kill`, exit 137",
        (("force_kill", "second_interrupt"), ("force_kill", "grace_expired")),
    ),
    SeedGap(
        "Early validation exits",
        "no record at all",
        "fires `reject`: run.json and events.jsonl, exit 2",
        (("reject", "usage_error"), ("reject", "flag_conflict"), ("reject", "main_branch")),
    ),
)


def exit_rows(chart: Chart) -> list[ExitRow]:
    """One row per (edge into a terminal state × reason_code), in chart order."""
    rows: list[ExitRow] = []
    for edge in chart.edges:
        if chart.is_terminal(edge.dest):
            codes: tuple[str | None, ...] = edge.reason_codes or (None,)
            rows += [ExitRow(edge, code) for code in codes]
    return rows


# Rows that leave an attempt state before the agent starts, so with no attempt record: a
# fail-fast pre-task hook; a second interrupt while executing (once the agent runs, the first
# interrupt moves the run to `stopping` at once, so only a pre-task hook can still be running
# when the second one comes); the task file found changed before the agent starts.
BEFORE_ATTEMPT_ROWS = frozenset(
    {
        ("hook_failed", "executing", "hook_failed"),
        ("force_kill", "executing", "second_interrupt"),
        ("backlog_changed", "executing", "task_file_changed"),
    }
)

# Rejected before a record could be written: the run has no directory to write into.
NO_RECORD_CODES = frozenset({"records_unwritable"})

# (trigger, from state, reason_code): the key a scenario names its row by.
RowKey = tuple[str, str, str | None]


def row_key(row: ExitRow) -> RowKey:
    return (row.edge.trigger, row.edge.source, row.reason_code)


def files_written(edge: Edge, reason_code: str | None = None) -> str:
    """The artifacts a run ending through ``edge`` with ``reason_code`` leaves behind."""
    if reason_code in NO_RECORD_CODES:
        return "none: no record can be written; one line on stderr"
    # status.json is written when the machine starts, before validation: rejections have it.
    files = "run.json, status.json, events.jsonl"
    before_attempt = (edge.trigger, edge.source, reason_code) in BEFORE_ATTEMPT_ROWS
    if edge.source in ATTEMPT_STATES and not before_attempt:
        files += ", tasks/<id>/task.json¹"
    return files


# --- scenarios: the evidence for each row ---------------------------------------------------

SCENARIO_MARK = "exit_path"
SKIP_MARKS = frozenset({"skip", "skipif", "xfail", "real_cli"})
TestFunction = ast.FunctionDef | ast.AsyncFunctionDef


def _mark_name(node: ast.expr) -> str | None:
    """``exit_path`` for ``@exit_path(...)`` or ``@pytest.mark.exit_path(...)``."""
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _scenario_keys(function: TestFunction) -> list[RowKey]:
    """The rows a test function names, or none when it is skipped or marked as not run by CI."""
    names = {_mark_name(d) for d in function.decorator_list}
    if names & SKIP_MARKS:
        return []
    keys: list[RowKey] = []
    for decorator in function.decorator_list:
        if not isinstance(decorator, ast.Call) or _mark_name(decorator) != SCENARIO_MARK:
            continue
        args = [a.value if isinstance(a, ast.Constant) else ... for a in decorator.args]
        if len(args) == 3 and all(isinstance(a, str | None) for a in args):
            trigger, source, code = args
            keys.append((str(trigger), str(source), code))  # type: ignore[arg-type]
    return keys


def _test_functions(tree: ast.Module) -> Iterator[tuple[str, TestFunction]]:
    """(pytest node id suffix, function) for the tests pytest collects from a module."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions) and node.name.startswith("test"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, functions) and item.name.startswith("test"):
                    yield f"{node.name}::{item.name}", item


def find_scenarios(root: Path) -> dict[RowKey, list[str]]:
    """Row key → the pytest ids of the tests under ``root/tests`` that drive the real process
    into that ending (marked ``@exit_path(trigger, source, reason_code)``)."""
    found: dict[RowKey, list[str]] = {}
    for path in sorted((root / "tests").rglob("test_*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for name, function in _test_functions(tree):
            for key in _scenario_keys(function):
                found.setdefault(key, []).append(f"{rel}::{name}")
    return found


def _row_line(row: ExitRow, scenarios: dict[RowKey, list[str]]) -> str:
    edge = row.edge
    code = exit_code_for(edge.dest, row.reason_code)
    reason = f"`{row.reason_code}`" if row.reason_code else "—"
    tests = scenarios.get(row_key(row), [])
    proof = "✅ " + "<br>".join(f"`{t}`" for t in tests) if tests else "❌ no scenario"
    return (
        f"| `{edge.trigger}` | {edge.source} | **{edge.dest}** | {reason} | {code} "
        f"| {files_written(edge, row.reason_code)} | {proof} |"
    )


def _gap_line(gap: SeedGap, proven: set[tuple[str, str | None]]) -> str:
    rows = ", ".join(f"`{trigger}`/`{code}`" for trigger, code in gap.rows)
    mark = "✅" if all(pair in proven for pair in gap.rows) else "❌"
    return f"| {gap.gap} | ❌ {gap.seed} | {gap.now} | {rows} | {mark} |"


def exit_paths_markdown(chart: Chart, scenarios: dict[RowKey, list[str]]) -> str:
    rows = exit_rows(chart)
    proven_rows = [row for row in rows if scenarios.get(row_key(row))]
    proven = {(row.edge.trigger, row.reason_code) for row in proven_rows}
    share = f"{100 * len(proven_rows) // len(rows)}%" if rows else "100%"
    lines = [
        f"# Exit paths of the `{chart.name}` chart",
        "",
        "Generated by `tools/export_statecharts.py` from `cub/chart/definition.py` and the",
        "scenarios under `tests/`; do not edit.",
        "Each row below is an edge of the chart into a terminal state, once per `reason_code`",
        "that edge can record. Every one of them ends through the machine's single terminal",
        "callback, `on_enter_terminal`, which writes the files listed before the process exits",
        "with the code shown; no other code exits the process (`tools/audit_exits.py` checks).",
        "",
        "The last column is the evidence: the test (marked `@exit_path(trigger, from state,",
        "reason_code)`) that drives the real `cub` process into that ending and checks every",
        "artifact the row lists and the process's exit code. CI runs every one of them, and",
        "`tests/chart/test_audit.py` fails when a row has no scenario (❌) or a scenario names",
        "a row the chart does not have.",
        "",
        "| trigger | from state | terminal state | reason_code | exit code | files written "
        "| proved by |",
        "|---|---|---|---|---|---|---|",
        *(_row_line(row, scenarios) for row in rows),
        "",
        f"**{len(rows)} ways to end a run; {len(proven_rows)} proved by a scenario ({share}).**",
        "",
        "¹ when an agent attempt had started; it is recorded with what is known "
        "(`interrupted`, `killed`, …).",
        "`runner_died` is recorded afterwards by crash recovery (`recorded_by: recovery`), "
        "through the same callback.",
        "`records_unwritable`: the run's directory could not be created, so the rejection is "
        "only the exit code 2 and one line on stderr; no work is done.",
        "",
        "## Gaps in the seed audit, and how they are covered now",
        "",
        "| seed gap | then | now | rows above | proved |",
        "|---|---|---|---|---|",
        *(_gap_line(gap, proven) for gap in SEED_GAPS),
    ]
    return "\n".join(lines) + "\n"


# --- process exits in code ------------------------------------------------------------------

ALLOWED_FILE = "cub/cli/main.py"
ALLOWED_FUNCTION = "main"

EXIT_CALLS = frozenset({"sys.exit", "os._exit", "os.abort", "exit", "quit"})
EXIT_RAISES = frozenset(
    {
        "SystemExit",
        "builtins.SystemExit",
        "click.Abort",
        "click.exceptions.Abort",
        "click.exceptions.Exit",
        "Exit",
        "Abort",
    }
)
# click.Context.exit/abort end the process; ctx.fail raises a UsageError the CLI turns into a run.
CONTEXT_EXITS = frozenset({"exit", "abort"})
CONTEXT_NAMES = frozenset({"ctx", "context"})
CONTEXT_FACTORIES = frozenset({"click.get_current_context", "click.globals.get_current_context"})


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name → dotted origin, for every import in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import a.b` binds `a`; `import a.b as c` binds `c` to `a.b`.
                top = alias.name.split(".")[0]
                names[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _is_context(node: ast.expr, aliases: dict[str, str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in CONTEXT_NAMES
    if isinstance(node, ast.Call):
        return _dotted(node.func, aliases) in CONTEXT_FACTORIES
    return False


def _ends_process(node: ast.AST, aliases: dict[str, str]) -> bool:
    if isinstance(node, ast.Raise) and node.exc is not None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        return _dotted(exc, aliases) in EXIT_RAISES
    if isinstance(node, ast.Call):
        func = node.func
        context_exit = (
            isinstance(func, ast.Attribute)
            and func.attr in CONTEXT_EXITS
            and _is_context(func.value, aliases)
        )
        return context_exit or _dotted(func, aliases) in EXIT_CALLS
    return False


def _allowed_spans(tree: ast.Module) -> list[tuple[int, int]]:
    return [
        (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name == ALLOWED_FUNCTION
    ]


def _exits_in(tree: ast.Module) -> Iterator[ast.AST]:
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if _ends_process(node, aliases):
            yield node


def _scan_file(path: Path, rel: str) -> list[tuple[int, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    except (SyntaxError, UnicodeDecodeError) as exc:
        # Code that cannot be parsed cannot be audited; say so rather than pass it.
        return [(getattr(exc, "lineno", None) or 1, f"cannot be audited: {exc}")]
    spans = _allowed_spans(tree) if rel == ALLOWED_FILE else []
    found: list[tuple[int, str]] = []
    for node in _exits_in(tree):
        line = getattr(node, "lineno", 1)
        if any(start <= line <= end for start, end in spans):
            continue
        found.append((line, _shorten(ast.unparse(node))))
    return sorted(found)


def _shorten(source: str, limit: int = 80) -> str:
    first = source.splitlines()[0] if source else source
    return first if len(first) <= limit else first[: limit - 1] + "…"


def find_process_exits(root: Path) -> list[str]:
    """``file:line: code`` for each place under ``root/cub`` that ends the process, except
    inside `main` of cub/cli/main.py."""
    package = root / "cub"
    if not package.is_dir():
        return []
    findings: list[str] = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        findings += [f"{rel}:{line}: {what}" for line, what in _scan_file(path, rel)]
    return findings
