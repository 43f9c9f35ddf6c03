"""`cub runs report`: one run's record as a page to read in the morning.

A single self-contained HTML file (inline CSS and SVG; no script, font or anything fetched), written
into the run's directory: the ending, the path the run took through the state chart, a timeline
of its attempts with tokens accumulating, a section per task (outcome, usage, the agent's last
lines, commits, links to prompt.md, harness.log and task.json) and one per child run. Every
value from the record is escaped: titles, reasons and agents' output are anyone's text.

Elements carry ``data-*`` attributes (``data-state``, ``data-edge``, ``data-attempt``) so that
what the page shows can be checked in a browser's DOM.
"""

from __future__ import annotations

import html
import subprocess
from collections import deque
from datetime import datetime
from pathlib import Path

from cub.chart.definition import RUN_CHART, Chart
from cub.records.reader import list_summaries, read_events, read_run_json, task_attempts
from cub.records.schemas import RunRecord, TaskAttempt

REPORT_NAME = "report.html"
INDEX_NAME = "index.html"
LAST_LINES = 12

_OUTCOME_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "stuck": "#ef6c00",
    "interrupted": "#6a1b9a",
    "killed": "#37474f",
    "timed_out": "#ad1457",
}
_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd }
table { border-collapse: collapse } td, th { padding: 2px 10px 2px 0; text-align: left }
.state-completed { color: #2e7d32 } .state-failed, .state-force_killed { color: #c62828 }
.state-interrupted, .state-budget_exhausted, .state-validation_rejected { color: #ef6c00 }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap }
section.task, section.child { border-left: 4px solid #ccc; padding-left: 1em; margin: 1em 0 }
svg text { font: 11px system-ui, sans-serif }
.chart .state rect { fill: #fff; stroke: #bbb }
.chart .state.visited rect { fill: #e3f2fd; stroke: #1565c0; stroke-width: 2 }
.chart .edge line { stroke: #ddd } .chart .edge.visited line { stroke: #1565c0; stroke-width: 2.5 }
.chart .state.final rect { fill: #1565c0 } .chart .state.final text { fill: #fff }
"""


def write_report(run_dir: Path, project_dir: Path) -> Path:
    """Render the run in ``run_dir`` (and its children) to ``report.html`` there."""
    record = read_run_json(run_dir)
    if record is None:
        raise FileNotFoundError(f"{run_dir} has no run.json yet: the run has not ended")
    for child in record.children:
        child_dir = run_dir.parent / child.run_id
        if (child_dir / "run.json").is_file():
            write_report(child_dir, project_dir)
    inner = sorted((run_dir / "inner").glob("*/run.json")) if (run_dir / "inner").is_dir() else []
    for path in inner:
        write_report(path.parent, project_dir)
    page = render_run(record, run_dir, project_dir, [p.parent for p in inner])
    target = run_dir / REPORT_NAME
    target.write_text(page, encoding="utf-8")
    return target


def write_index(project_dir: Path, runs: Path) -> Path:
    rows = []
    for summary in list_summaries(project_dir):
        link = f"{summary.run_id}/{REPORT_NAME}"
        cost = "unknown" if summary.budget.cost_usd is None else f"${summary.budget.cost_usd:.4f}"
        rows.append(
            f'<tr data-run="{_e(summary.run_id)}"><td><a href="{_e(link)}">{_e(summary.run_id)}</a>'
            f'</td><td>{_e(summary.mode)}</td><td class="state-{_e(summary.state)}">'
            f"{_e(summary.state)}</td><td>{_e(summary.exit_code)}</td>"
            f"<td>{summary.tasks.succeeded}/{summary.tasks.failed}</td>"
            f"<td>{summary.budget.tokens_used}</td><td>{cost}</td>"
            f"<td>{_e(summary.started_at[:19])}</td><td>{_e(summary.reason)}</td></tr>"
        )
    body = (
        "<h1>cub runs</h1><table><tr><th>run</th><th>mode</th><th>state</th><th>exit</th>"
        "<th>ok/fail</th><th>tokens</th><th>cost</th><th>started</th><th>reason</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    target = runs / INDEX_NAME
    target.write_text(_page("cub runs", body), encoding="utf-8")
    return target


def render_run(
    record: RunRecord, run_dir: Path, project_dir: Path, inner_dirs: list[Path] | None = None
) -> str:
    attempts = task_attempts(run_dir)
    parts = [
        f'<h1>Run {_e(record.run_id)} <span class="state-{_e(record.state)}" '
        f'data-run-state="{_e(record.state)}">{_e(record.state)}</span></h1>',
        _ending(record),
        "<h2>Path through the state chart</h2>",
        chart_svg(RUN_CHART, record),
        "<h2>Timeline</h2>",
        timeline_svg(record, timeline_rows(record, run_dir, inner_dirs or [])),
        "<h2>Tasks</h2>",
        *(_task_section(run_dir, path, attempt, project_dir) for path, attempt in attempts),
    ]
    if not attempts:
        parts.append("<p>No task was attempted.</p>")
    if record.children or inner_dirs:
        parts.append("<h2>Child runs</h2>")
        inside = {path.name for path in inner_dirs or []}
        for child in record.children:
            # A parallel child's records are beside its parent's; a sandbox's are inside them.
            where = "inner" if child.run_id in inside else ".."
            link = f"{where}/{child.run_id}/{REPORT_NAME}"
            parts.append(
                f'<section class="child" data-child="{_e(child.run_id)}"><a href="{_e(link)}">'
                f"{_e(child.run_id)}</a> — task {_e(child.task_id)}: "
                f'<span class="state-{_e(child.state)}">{_e(child.state)}</span> '
                f"(exit {_e(child.exit_code)}, {_e(child.reason_code)})"
                + (f' on node <span class="node">{_e(child.node)}</span>' if child.node else "")
                + (f" — {_e(child.problem)}" if child.problem else "")
                + "</section>"
            )
        for inner in [p for p in inner_dirs or [] if p.name not in _children_ids(record)]:
            link = f"inner/{inner.name}/{REPORT_NAME}"
            parts.append(
                f'<section class="child" data-child="{_e(inner.name)}">the run inside the '
                f'sandbox: <a href="{_e(link)}">{_e(inner.name)}</a></section>'
            )
    return _page(f"cub run {record.run_id}", "\n".join(parts))


def _children_ids(record: RunRecord) -> set[str]:
    return {child.run_id for child in record.children}


def _ending(record: RunRecord) -> str:
    budget = record.budget
    cost = "unknown" if budget.cost_usd is None else f"${budget.cost_usd:.4f}"
    if budget.cost_incomplete and budget.cost_usd is not None:
        cost += " + unknown"
    rows = [
        ("reason", f"{record.reason} [{record.reason_code}]"),
        ("exit code", record.exit_code),
        ("mode", record.mode),
        ("started", record.started_at),
        ("duration", f"{record.duration_s:.1f} s"),
        ("tokens", budget.tokens_used),
        ("cost", cost),
        ("branch", record.branch or "none"),
        ("recorded by", record.recorded_by),
    ]
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="ending">{cells}</table>'


def chart_svg(chart: Chart, record: RunRecord) -> str:
    """The chart laid out in rows by distance from the initial state; the states and edges
    the run's history went through are marked ``visited``."""
    depth = {chart.initial: 0}
    queue = deque([chart.initial])
    while queue:
        state = queue.popleft()
        for edge in chart.edges:
            if edge.source == state and edge.dest not in depth:
                depth[edge.dest] = depth[state] + 1
                queue.append(edge.dest)
    rows: dict[int, list[str]] = {}
    for state in chart.states:
        rows.setdefault(depth.get(state, max(depth.values()) + 1), []).append(state)
    box_w, box_h, gap_x, gap_y = 130, 26, 20, 46
    width = max(len(states) for states in rows.values()) * (box_w + gap_x) + gap_x
    place = {}
    for row, states in sorted(rows.items()):
        offset = (width - len(states) * (box_w + gap_x) + gap_x) / 2
        for i, state in enumerate(states):
            place[state] = (offset + i * (box_w + gap_x), 10 + row * (box_h + gap_y))
    visited_states = {t.from_ for t in record.history} | {t.to for t in record.history}
    visited_edges = {(t.from_, t.to) for t in record.history}
    pairs = dict.fromkeys((e.source, e.dest) for e in chart.edges if e.source != e.dest)
    lines = []
    for source, dest in pairs:
        (x1, y1), (x2, y2) = place[source], place[dest]
        visited = " visited" if (source, dest) in visited_edges else ""
        lines.append(
            f'<g class="edge{visited}" data-edge="{_e(source)}-&gt;{_e(dest)}"><line '
            f'x1="{x1 + box_w / 2:.0f}" y1="{y1 + box_h:.0f}" x2="{x2 + box_w / 2:.0f}" '
            f'y2="{y2:.0f}"/></g>'
        )
    boxes = []
    for state, (x, y) in place.items():
        classes = "state"
        if state in visited_states:
            classes += " visited"
        if state == record.state:
            classes += " final"
        boxes.append(
            f'<g class="{classes}" data-state="{_e(state)}"><rect x="{x:.0f}" y="{y:.0f}" '
            f'width="{box_w}" height="{box_h}" rx="5"/><text x="{x + box_w / 2:.0f}" '
            f'y="{y + 17:.0f}" text-anchor="middle">{_e(state)}</text></g>'
        )
    height = max(y for _, y in place.values()) + box_h + 10
    path = (
        " → ".join([record.history[0].from_, *(t.to for t in record.history)])
        if record.history
        else ""
    )
    return (
        f'<svg class="chart" width="{width:.0f}" height="{height:.0f}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(lines)}{"".join(boxes)}</svg>'
        f'<p class="path" data-path="{_e(path)}">{_e(path)}</p>'
    )


def timeline_rows(
    record: RunRecord, run_dir: Path, inner_dirs: list[Path]
) -> list[tuple[str, TaskAttempt]]:
    """Every attempt the page's timeline shows, each with its row: the run's own by task, and
    its children's (parallel children beside it, the run inside a sandbox) as
    ``<child run>:<task>``, so children that ran at once are drawn side by side."""
    rows = [(attempt.task_id, attempt) for _, attempt in task_attempts(run_dir)]
    places = [run_dir.parent / child.run_id for child in record.children] + inner_dirs
    for place in dict.fromkeys(places):
        if place.is_dir():
            rows += [(f"{place.name}:{a.task_id}", a) for _, a in task_attempts(place)]
    return rows


def timeline_svg(record: RunRecord, rows_of: list[tuple[str, TaskAttempt]]) -> str:
    """One bar per attempt, from its start to its end, coloured by outcome, one row per task
    (children of a parallel run side by side), and the tokens used accumulating under it."""
    if not rows_of:
        return "<p>No attempts.</p>"
    attempts = [attempt for _, attempt in rows_of]
    start = _time(record.started_at)
    end = max(_time(record.ended_at), *(_time(a.ended_at) for a in attempts))
    span = max((end - start), 0.001)
    tasks = list(dict.fromkeys(row for row, _ in rows_of))
    width, label_w, row_h = 1000, 220, 22
    plot_w = width - label_w - 10
    bars = []
    for row_name, attempt in rows_of:
        row = tasks.index(row_name)
        x = label_w + (_time(attempt.started_at) - start) / span * plot_w
        w = max(2.0, (_time(attempt.ended_at) - _time(attempt.started_at)) / span * plot_w)
        colour = _OUTCOME_COLOURS.get(attempt.outcome, "#888")
        bars.append(
            f'<rect class="attempt" data-attempt="{_e(row_name)}#{attempt.attempt}" '
            f'data-outcome="{_e(attempt.outcome)}" x="{x:.1f}" y="{row * row_h + 4}" '
            f'width="{w:.1f}" height="{row_h - 8}" fill="{colour}"><title>'
            f"{_e(attempt.task_id)} #{attempt.attempt}: {_e(attempt.outcome)} "
            f"({attempt.duration_s:.1f} s, {attempt.usage.total_tokens} tokens)</title></rect>"
        )
    labels = "".join(
        f'<text x="4" y="{i * row_h + 15}">{_e(task_id)}</text>' for i, task_id in enumerate(tasks)
    )
    top = len(tasks) * row_h + 10
    curve_h = 60
    by_end = sorted(attempts, key=lambda a: a.ended_at)
    ends = [label_w + (_time(a.ended_at) - start) / span * plot_w for a in by_end]

    def accumulating(values: list[float], kind: str, colour: str, shown: str, y: int) -> str:
        total, running, points = sum(values) or 1.0, 0.0, [f"{label_w},{top + curve_h}"]
        for x, value in zip(ends, values, strict=True):
            running += value
            points.append(f"{x:.1f},{top + curve_h - running / total * curve_h:.1f}")
        return (
            f'<polyline class="{kind}" points="{" ".join(points)}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/><text x="{width - 150}" y="{y}" '
            f'fill="{colour}">{shown}</text>'
        )

    tokens = [float(a.usage.total_tokens) for a in by_end]
    curve = f'<text x="4" y="{top + 20}">tokens, cost</text>' + accumulating(
        tokens, "tokens", "#1565c0", f"{int(sum(tokens))} tokens", top + 12
    )
    costs = [a.usage.cost_usd or 0.0 for a in by_end]
    if any(a.usage.cost_usd is not None for a in by_end):
        unknown = " + unknown" if any(a.usage.cost_usd is None for a in by_end) else ""
        curve += accumulating(costs, "cost", "#2e7d32", f"${sum(costs):.4f}{unknown}", top + 26)
    height = top + curve_h + 10
    return (
        f'<svg class="timeline" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">{labels}{"".join(bars)}{curve}</svg>'
    )


def _task_section(run_dir: Path, folder: Path, attempt: TaskAttempt, project_dir: Path) -> str:
    relative = folder.relative_to(run_dir).as_posix()
    links = " · ".join(
        f'<a href="{_e(relative)}/{name}">{name}</a>'
        for name in ("prompt.md", "harness.log", "task.json")
        if (folder / name).exists()
    )
    usage = attempt.usage
    detail = attempt.stuck_reason or (attempt.error.message if attempt.error else "")
    commits = _commits(run_dir, attempt.task_id, project_dir)
    return (
        f'<section class="task" data-task="{_e(attempt.task_id)}" '
        f'data-outcome="{_e(attempt.outcome)}"><h3>{_e(attempt.task_id)}: {_e(attempt.title)}'
        f"</h3><p>attempt {attempt.attempt}: <b>{_e(attempt.outcome)}</b> in "
        f"{attempt.duration_s:.1f} s"
        + (f" — {_e(detail)}" if detail else "")
        + f"; {usage.total_tokens} tokens ({usage.input_tokens} in, {usage.output_tokens} out)"
        + (f", ${usage.cost_usd:.4f}" if usage.cost_usd is not None else ", cost unknown")
        + "</p>"
        + (f"<p>commits:</p><pre>{_e(commits)}</pre>" if commits else "")
        + f"<p>the agent's last lines:</p><pre>{_e(_last_lines(folder / 'harness.log'))}</pre>"
        + f"<p>{links}</p></section>"
    )


def _commits(run_dir: Path, task_id: str, project_dir: Path) -> str:
    """The task's commits (hash and subject), from the range its close recorded."""
    ranges = [
        str(e.data.get("commits"))
        for e in read_events(run_dir)
        if (e.task_id or e.data.get("task_id")) == task_id and e.data.get("commits")
    ]
    if not ranges:
        return ""
    try:
        done = subprocess.run(
            ["git", "log", "--format=%h %s", ranges[-1]],
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return ranges[-1]
    return done.stdout.strip() or ranges[-1]


def _last_lines(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no output recorded)"
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-LAST_LINES:]) or "(no output)"


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )
