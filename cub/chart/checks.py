"""Graph checks over a chart: each one refuses a chart that breaks a rule of SPEC §3.

Every check is a pure function of the chart and raises `InvalidChart` naming the offending
states or edges, so a bad edit to the definition fails loudly at import or in CI, never in a run.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from cub.chart.definition import Chart, Edge
from cub.errors import InvalidChart


def describe(edge: Edge) -> str:
    return f"{edge.trigger}: {edge.source} -> {edge.dest}"


def _names(states: Iterable[str]) -> str:
    return ", ".join(states)


def successors(chart: Chart) -> dict[str, list[str]]:
    """Each state's destinations, in edge order, without repeats."""
    graph: dict[str, list[str]] = {state: [] for state in chart.states}
    for edge in chart.edges:
        dests = graph.setdefault(edge.source, [])
        if edge.dest not in dests:
            dests.append(edge.dest)
    return graph


def predecessors(chart: Chart) -> dict[str, list[str]]:
    """Each state's sources, in edge order, without repeats."""
    graph: dict[str, list[str]] = {state: [] for state in chart.states}
    for edge in chart.edges:
        sources = graph.setdefault(edge.dest, [])
        if edge.source not in sources:
            sources.append(edge.source)
    return graph


def _walk(graph: dict[str, list[str]], starts: Iterable[str]) -> set[str]:
    seen = set(starts)
    queue = deque(seen)
    while queue:
        for nxt in graph.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def reachable(chart: Chart, start: str) -> set[str]:
    """Every state reachable from ``start`` (including ``start`` itself)."""
    return _walk(successors(chart), [start])


def can_reach_terminal(chart: Chart) -> set[str]:
    """Every state from which some terminal state is reachable (terminals included)."""
    return _walk(predecessors(chart), chart.terminal)


def check_unique_states(chart: Chart) -> None:
    for label, states in (("states", chart.states), ("terminal states", chart.terminal)):
        repeated = [s for s, n in Counter(states).items() if n > 1]
        if repeated:
            raise InvalidChart(f"chart {chart.name!r}: duplicate {label}: {_names(repeated)}")


def check_known_states(chart: Chart) -> None:
    known = set(chart.states)
    if chart.initial not in known:
        raise InvalidChart(f"chart {chart.name!r}: initial state {chart.initial!r} is unknown")
    unknown_terminals = [s for s in chart.terminal if s not in known]
    if unknown_terminals:
        raise InvalidChart(
            f"chart {chart.name!r}: unknown terminal states: {_names(unknown_terminals)}"
        )
    bad = [e for e in chart.edges if e.source not in known or e.dest not in known]
    if bad:
        unknown = sorted({s for e in bad for s in (e.source, e.dest) if s not in known})
        raise InvalidChart(
            f"chart {chart.name!r}: edges reference unknown states {_names(unknown)}: "
            + "; ".join(describe(e) for e in bad)
        )


def check_terminals_absorbing(chart: Chart) -> None:
    leaving = [e for e in chart.edges if chart.is_terminal(e.source)]
    if leaving:
        raise InvalidChart(
            f"chart {chart.name!r}: terminal states are absorbing, but edges leave "
            f"{_names(dict.fromkeys(e.source for e in leaving))}: "
            + "; ".join(describe(e) for e in leaving)
        )


def check_unambiguous(chart: Chart) -> None:
    by_key: dict[tuple[str, str], list[Edge]] = {}
    for edge in chart.edges:
        by_key.setdefault((edge.trigger, edge.source), []).append(edge)
    clashes = [edges for edges in by_key.values() if len(edges) > 1]
    if clashes:
        raise InvalidChart(
            f"chart {chart.name!r}: ambiguous triggers (same trigger, same source): "
            + "; ".join(" / ".join(describe(e) for e in edges) for edges in clashes)
        )


def check_all_reachable(chart: Chart) -> None:
    seen = reachable(chart, chart.initial)
    unreachable = [s for s in chart.states if s not in seen]
    if unreachable:
        raise InvalidChart(
            f"chart {chart.name!r}: states unreachable from {chart.initial!r}: "
            f"{_names(unreachable)}"
        )


def check_no_trap_states(chart: Chart) -> None:
    ending = can_reach_terminal(chart)
    traps = [s for s in chart.states if s not in ending]
    if traps:
        raise InvalidChart(
            f"chart {chart.name!r}: trap states (no terminal state reachable): {_names(traps)}"
        )


# Structural checks come first: the graph walks assume every edge names a known state.
CHECKS = (
    check_unique_states,
    check_known_states,
    check_terminals_absorbing,
    check_unambiguous,
    check_all_reachable,
    check_no_trap_states,
)


def check_chart(chart: Chart) -> None:
    """Raise `InvalidChart` for the first rule the chart breaks."""
    for check in CHECKS:
        check(chart)
