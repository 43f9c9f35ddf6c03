"""Shortest edge paths through a chart, for the generated chart tests and the exit audit.

All walks are breadth-first and visit a state's outgoing edges in the order the chart declares
them, so the same chart always yields the same paths (and the same generated test ids).
"""

from __future__ import annotations

from collections import deque

from cub.chart.definition import Chart, Edge
from cub.errors import InvalidChart


def outgoing(chart: Chart) -> dict[str, list[Edge]]:
    """Each state's outgoing edges, in chart order."""
    table: dict[str, list[Edge]] = {state: [] for state in chart.states}
    for edge in chart.edges:
        table.setdefault(edge.source, []).append(edge)
    return table


def _first_edges(chart: Chart, start: str) -> dict[str, Edge | None]:
    """For every state reachable from ``start``, the edge a BFS first reached it by."""
    table = outgoing(chart)
    via: dict[str, Edge | None] = {start: None}
    queue = deque([start])
    while queue:
        for edge in table.get(queue.popleft(), ()):
            if edge.dest not in via:
                via[edge.dest] = edge
                queue.append(edge.dest)
    return via


def _unwind(via: dict[str, Edge | None], state: str) -> list[Edge]:
    path: list[Edge] = []
    edge = via[state]
    while edge is not None:
        path.append(edge)
        edge = via[edge.source]
    path.reverse()
    return path


def shortest_paths(chart: Chart) -> dict[str, list[Edge]]:
    """A shortest path from the initial state to every reachable state, in chart state order."""
    via = _first_edges(chart, chart.initial)
    return {state: _unwind(via, state) for state in chart.states if state in via}


def shortest_path_to(chart: Chart, state: str) -> list[Edge]:
    """A shortest path from the initial state to ``state`` (empty for the initial state)."""
    via = _first_edges(chart, chart.initial)
    if state not in via:
        raise InvalidChart(f"chart {chart.name!r}: {state!r} is unreachable from {chart.initial!r}")
    return _unwind(via, state)


def path_to_terminal(chart: Chart, state: str) -> list[Edge]:
    """A shortest continuation from ``state`` to some terminal state (empty if it is terminal)."""
    via = _first_edges(chart, state)
    # Terminals in BFS discovery order: the first one found is a nearest one.
    for reached in via:
        if chart.is_terminal(reached):
            return _unwind(via, reached)
    raise InvalidChart(f"chart {chart.name!r}: no terminal state is reachable from {state!r}")


def edge_paths(chart: Chart) -> list[tuple[Edge, list[Edge]]]:
    """For every edge, a whole run that takes it: initial → its source, the edge, → a terminal."""
    to_state = shortest_paths(chart)
    to_end: dict[str, list[Edge]] = {}
    result: list[tuple[Edge, list[Edge]]] = []
    for edge in chart.edges:
        if edge.source not in to_state:
            raise InvalidChart(
                f"chart {chart.name!r}: {edge.source!r} is unreachable from {chart.initial!r}"
            )
        if edge.dest not in to_end:
            to_end[edge.dest] = path_to_terminal(chart, edge.dest)
        result.append((edge, [*to_state[edge.source], edge, *to_end[edge.dest]]))
    return result
