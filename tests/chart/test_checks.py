from __future__ import annotations

import pytest

from cub.chart.checks import (
    can_reach_terminal,
    check_all_reachable,
    check_chart,
    check_known_states,
    check_no_trap_states,
    check_terminals_absorbing,
    check_unambiguous,
    check_unique_states,
    reachable,
)
from cub.chart.definition import RUN_CHART, TERMINAL_STATES, Chart, Edge
from cub.errors import InvalidChart


def chart(
    states: tuple[str, ...],
    edges: tuple[Edge, ...],
    terminal: tuple[str, ...] = ("done",),
    initial: str = "start",
) -> Chart:
    return Chart(name="toy", initial=initial, states=states, terminal=terminal, edges=edges)


def edge(trigger: str, source: str, dest: str) -> Edge:
    return Edge(trigger, source, dest, f"{trigger} from {source}")


GOOD = chart(("start", "work", "done"), (edge("go", "start", "work"), edge("end", "work", "done")))


def test_the_run_chart_passes_every_check() -> None:
    check_chart(RUN_CHART)


def test_the_run_chart_reaches_every_state_and_every_state_can_end() -> None:
    assert reachable(RUN_CHART, RUN_CHART.initial) == set(RUN_CHART.states)
    assert can_reach_terminal(RUN_CHART) == set(RUN_CHART.states)
    assert set(RUN_CHART.terminal) == set(TERMINAL_STATES)


def test_a_small_good_chart_passes() -> None:
    check_chart(GOOD)
    assert reachable(GOOD, "work") == {"work", "done"}


def test_an_edge_out_of_a_terminal_state_is_refused() -> None:
    bad = chart(GOOD.states, (*GOOD.edges, edge("revive", "done", "work")))
    with pytest.raises(InvalidChart, match="absorbing") as err:
        check_terminals_absorbing(bad)
    assert "done" in str(err.value) and "revive" in str(err.value)
    with pytest.raises(InvalidChart, match="revive: done -> work"):
        check_chart(bad)


def test_an_unreachable_state_is_refused() -> None:
    bad = chart((*GOOD.states, "island"), (*GOOD.edges, edge("leave", "island", "done")))
    with pytest.raises(InvalidChart, match=r"unreachable from 'start': island$"):
        check_all_reachable(bad)
    with pytest.raises(InvalidChart, match="island"):
        check_chart(bad)


def test_a_trap_state_is_refused() -> None:
    bad = chart(
        ("start", "work", "loop_a", "loop_b", "done"),
        (
            *GOOD.edges,
            edge("spin", "start", "loop_a"),
            edge("spin", "loop_a", "loop_b"),
            edge("spin", "loop_b", "loop_a"),
        ),
    )
    with pytest.raises(InvalidChart, match=r"trap states .*: loop_a, loop_b$"):
        check_no_trap_states(bad)
    with pytest.raises(InvalidChart, match="loop_a, loop_b"):
        check_chart(bad)


def test_a_dead_end_without_edges_is_a_trap_state() -> None:
    bad = chart(
        ("start", "stuck", "done"), (edge("go", "start", "stuck"), edge("end", "start", "done"))
    )
    with pytest.raises(InvalidChart, match="stuck"):
        check_chart(bad)


def test_an_edge_to_an_unknown_state_is_refused() -> None:
    bad = chart(GOOD.states, (*GOOD.edges, edge("jump", "work", "nowhere")))
    with pytest.raises(InvalidChart, match="unknown states nowhere: jump: work -> nowhere"):
        check_known_states(bad)
    with pytest.raises(InvalidChart, match="nowhere"):
        check_chart(bad)


def test_an_unknown_initial_or_terminal_state_is_refused() -> None:
    with pytest.raises(InvalidChart, match="initial state 'begin'"):
        check_chart(chart(GOOD.states, GOOD.edges, initial="begin"))
    with pytest.raises(InvalidChart, match="unknown terminal states: gone"):
        check_chart(chart(GOOD.states, GOOD.edges, terminal=("done", "gone")))


def test_duplicate_states_are_refused() -> None:
    bad = chart(("start", "work", "work", "done"), GOOD.edges)
    with pytest.raises(InvalidChart, match="duplicate states: work"):
        check_unique_states(bad)
    with pytest.raises(InvalidChart, match="work"):
        check_chart(bad)


def test_an_ambiguous_trigger_is_refused() -> None:
    bad = chart(GOOD.states, (*GOOD.edges, edge("go", "start", "done")))
    with pytest.raises(InvalidChart, match="ambiguous") as err:
        check_unambiguous(bad)
    assert "go: start -> work / go: start -> done" in str(err.value)
    with pytest.raises(InvalidChart, match="ambiguous"):
        check_chart(bad)


def test_the_same_trigger_from_different_states_is_not_ambiguous() -> None:
    check_unambiguous(RUN_CHART)
    assert len({e.source for e in RUN_CHART.edges if e.trigger == "crash"}) > 1
