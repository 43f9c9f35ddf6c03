"""The interrupt watch of a `cub run` from its first instant.

A Ctrl+C or SIGTERM that lands while the CLI is still importing or parsing options is held here
(the handler only notes it) and becomes the run's recorded interruption, instead of a traceback
or a death by signal with no record. `cub.cli.main` imports this first, so it is the first code
of both entry points (`cub` and `python -m cub`) after the empty package inits; what comes
before it is the interpreter's own start (see cub.lifecycle.signals).
"""

from __future__ import annotations

import sys

from cub.lifecycle.signals import InterruptWatch

EARLY_WATCH = InterruptWatch(armed=False)
if sys.argv[1:2] == ["run"]:
    EARLY_WATCH.install()
