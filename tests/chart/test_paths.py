from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import cub
from cub.chart.definition import RUN_CHART, Chart, Edge
from cub.chart.paths import edge_paths, path_to_terminal, shortest_path_to, shortest_paths
from cub.errors import InvalidChart


def assert_connected(chart: Chart, path: list[Edge], start: str) -> None:
    at = start
    for step in path:
        assert step.source == at, f"{step} does not continue from {at}"
        at = step.dest


def test_every_state_has_a_shortest_path_from_the_initial_state() -> None:
    paths = shortest_paths(RUN_CHART)
    assert list(paths) == list(RUN_CHART.states)
    assert paths[RUN_CHART.initial] == []
    for state, path in paths.items():
        assert_connected(RUN_CHART, path, RUN_CHART.initial)
        assert (path[-1].dest if path else RUN_CHART.initial) == state
        assert shortest_path_to(RUN_CHART, state) == path


def test_every_edge_is_taken_by_a_whole_run_that_ends_in_a_terminal_state() -> None:
    covered = edge_paths(RUN_CHART)
    assert [taken for taken, _ in covered] == list(RUN_CHART.edges)
    for taken, path in covered:
        assert taken in path
        assert path[0].source == RUN_CHART.initial
        assert_connected(RUN_CHART, path, RUN_CHART.initial)
        assert RUN_CHART.is_terminal(path[-1].dest)
        assert not any(RUN_CHART.is_terminal(step.source) for step in path)


def test_a_terminal_state_needs_no_continuation() -> None:
    for state in RUN_CHART.terminal:
        assert path_to_terminal(RUN_CHART, state) == []


# A diamond with a long way round: start -> a -> end is shortest, start -> b -> c -> end is not.
SHORT = Edge("short", "start", "a", "")
LONG = Edge("long", "start", "b", "")
TWIN = Edge("twin", "start", "a2", "")
DIAMOND = Chart(
    name="diamond",
    initial="start",
    states=("start", "b", "c", "a", "a2", "end", "other_end"),
    terminal=("end", "other_end"),
    edges=(
        LONG,
        Edge("b_to_c", "b", "c", ""),
        Edge("c_to_end", "c", "end", ""),
        SHORT,
        TWIN,
        Edge("a_to_end", "a", "end", ""),
        Edge("a2_to_other", "a2", "other_end", ""),
    ),
)


def test_the_shortest_path_on_a_hand_made_chart() -> None:
    assert [e.trigger for e in shortest_path_to(DIAMOND, "end")] == ["short", "a_to_end"]
    assert [e.trigger for e in shortest_path_to(DIAMOND, "c")] == ["long", "b_to_c"]
    assert [e.trigger for e in path_to_terminal(DIAMOND, "b")] == ["b_to_c", "c_to_end"]


def test_ties_are_broken_by_edge_order_in_the_chart() -> None:
    # From start, `end` (via a) and `other_end` (via a2) are both two steps away; `short` is
    # declared before `twin`, so `end` wins.
    assert [e.trigger for e in path_to_terminal(DIAMOND, "start")] == ["short", "a_to_end"]
    swapped = Chart(
        DIAMOND.name,
        DIAMOND.initial,
        DIAMOND.states,
        DIAMOND.terminal,
        tuple(sorted(DIAMOND.edges, key=lambda e: e is SHORT)),
    )
    assert [e.trigger for e in path_to_terminal(swapped, "start")] == ["twin", "a2_to_other"]


def test_the_edge_path_of_the_long_way_round() -> None:
    by_edge = dict((taken.trigger, path) for taken, path in edge_paths(DIAMOND))
    assert [e.trigger for e in by_edge["b_to_c"]] == ["long", "b_to_c", "c_to_end"]


# Prints every path the run chart has, as JSON, from a fresh interpreter.
_PRINT_PATHS = """
import msgspec
from cub.chart.definition import RUN_CHART
from cub.chart.paths import edge_paths, shortest_paths
print(msgspec.json.encode([edge_paths(RUN_CHART), shortest_paths(RUN_CHART)]).decode())
"""


def paths_in_a_fresh_process(hash_seed: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _PRINT_PATHS],
        cwd=Path(cub.__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_paths_are_deterministic() -> None:
    """The same paths in two processes whose str hashes (and so set orders) differ."""
    assert edge_paths(RUN_CHART) == edge_paths(RUN_CHART)
    assert shortest_paths(RUN_CHART) == shortest_paths(RUN_CHART)
    first, second = paths_in_a_fresh_process("1"), paths_in_a_fresh_process("2")
    assert first == second
    in_this_process = msgspec.json.encode([edge_paths(RUN_CHART), shortest_paths(RUN_CHART)])
    assert first.strip() == in_this_process.decode()


def test_an_unreachable_state_has_no_path() -> None:
    island = Chart(
        "island", "start", ("start", "end", "island"), ("end",), (Edge("go", "start", "end", ""),)
    )
    with pytest.raises(InvalidChart, match="'island' is unreachable"):
        shortest_path_to(island, "island")
    assert "island" not in shortest_paths(island)


def test_a_trap_state_has_no_way_to_a_terminal() -> None:
    trap = Chart(
        "trap",
        "start",
        ("start", "end", "pit"),
        ("end",),
        (Edge("go", "start", "end", ""), Edge("fall", "start", "pit", "")),
    )
    with pytest.raises(InvalidChart, match="no terminal state is reachable from 'pit'"):
        path_to_terminal(trap, "pit")
