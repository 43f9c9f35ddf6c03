"""How a run's process uses the cyclic garbage collector around the large data it holds.

A run holds a parsed backlog for its whole life: 100,000 tasks are about 200,000 lists (labels,
dependencies), all in no cycle. Each pass of the collector over them is wasted, and with the
default settings there are many: the young generation (700 objects) fills again and again while
the backlog is read, and each object read is walked once young (40 ms at 100,000 tasks) and
again in every later pass over the older generations.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# The young generation, in objects, for a process holding a large backlog: the run's own
# allocations between two passes are far fewer than what it holds.
YOUNG_GENERATION = 100_000

_hold_built = False


def hold_what_is_built() -> None:
    """Tune this process for a long life around data that is built once and held: a larger
    young generation, and what `built_outside_gc` makes kept out of every later pass. For the
    process of a run only: a library caller's collector is left as it is."""
    global _hold_built
    gc.set_threshold(YOUNG_GENERATION, 20, 100)
    _hold_built = True


@contextmanager
def built_outside_gc() -> Iterator[None]:
    """Build large cycle-free data (a parsed backlog) without the collector walking it: it is
    paused meanwhile, and in a process that holds what it builds (`hold_what_is_built`)
    everything then tracked is frozen out of later passes (`gc.freeze`).

    Frozen objects are still freed by reference counting when they are let go (the document
    of a backlog read again, say); only a cycle would not be, and the parse makes none."""
    if _hold_built:
        # Cycles already garbage would be frozen with the rest and never freed: collect them
        # first. The two younger generations are enough and cheap: the oldest holds what the
        # process made before its first freeze, its modules for the most part.
        gc.collect(1)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _hold_built:
            gc.freeze()
        if enabled:
            gc.enable()
