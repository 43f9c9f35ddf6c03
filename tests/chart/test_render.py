from __future__ import annotations

import shutil
import subprocess

import msgspec
import pytest

from cub.chart.definition import RUN_CHART, Chart, Edge
from cub.chart.render import (
    FORMATS,
    GraphvizMissing,
    render,
    to_dot,
    to_json,
    to_mermaid,
    to_svg,
)

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz 'dot' is not installed"
)


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "json"])
def test_renderings_are_deterministic(fmt: str) -> None:
    first = render(RUN_CHART, fmt)
    assert first == render(RUN_CHART, fmt)
    rebuilt = msgspec.json.decode(msgspec.json.encode(RUN_CHART), type=Chart)
    assert render(rebuilt, fmt) == first


@pytest.mark.parametrize("renderer", [to_mermaid, to_dot])
def test_every_state_and_trigger_is_drawn(renderer: object) -> None:
    text = renderer(RUN_CHART)  # type: ignore[operator]
    for state in RUN_CHART.states:
        assert state in text
    for edge in RUN_CHART.edges:
        assert edge.trigger in text


def test_mermaid_draws_the_start_every_edge_and_every_final_state() -> None:
    lines = to_mermaid(RUN_CHART).splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert f"    [*] --> {RUN_CHART.initial}" in lines
    for state in RUN_CHART.terminal:
        assert f"    {state} --> [*]" in lines
    for edge in RUN_CHART.edges:
        line = next(x for x in lines if x.startswith(f"    {edge.source} --> {edge.dest}: "))
        assert edge.trigger in line.split(": ", 1)[1].split(", ")


def test_edges_between_the_same_states_share_one_line() -> None:
    lines = to_mermaid(RUN_CHART).splitlines()
    assert "    settling --> selecting: task_succeeded, continue_loop" in lines
    pairs = [x.split(":")[0] for x in lines if " --> " in x and ": " in x]
    assert len(pairs) == len(set(pairs))
    assert to_dot(RUN_CHART).count('"settling" -> "selecting"') == 1


def test_dot_marks_terminal_states_and_an_invisible_start() -> None:
    text = to_dot(RUN_CHART)
    for state in RUN_CHART.terminal:
        assert f'"{state}" [shape=doublecircle];' in text
    assert f'"__start__" -> "{RUN_CHART.initial}";' in text
    assert "style=invis" in text


def test_dot_quotes_awkward_names() -> None:
    odd = Chart(
        'q"s',
        "a b",
        ("a b", "__start__", "end"),
        ("end",),
        (Edge("go", "a b", "__start__", ""), Edge('say "hi"', "__start__", "end", "")),
    )
    text = to_dot(odd)
    assert 'digraph "q\\"s"' in text
    assert '[label="say \\"hi\\""]' in text
    assert '"___start___" -> "a b";' in text


@needs_dot
def test_dot_output_is_accepted_by_graphviz() -> None:
    done = subprocess.run(
        ["dot", "-Tsvg"], input=to_dot(RUN_CHART).encode(), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"<svg" in done.stdout
    assert b"<svg" in to_svg(RUN_CHART)


def test_svg_without_graphviz_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(GraphvizMissing, match="'dot' program"):
        render(RUN_CHART, "svg")


def test_json_round_trips_into_a_chart() -> None:
    text = to_json(RUN_CHART)
    assert text.endswith("}\n") and "\n  " in text
    assert msgspec.json.decode(text, type=Chart) == RUN_CHART


def test_an_unknown_format_is_refused() -> None:
    assert set(FORMATS) == {"mermaid", "dot", "json", "svg"}
    with pytest.raises(ValueError, match="png"):
        render(RUN_CHART, "png")
