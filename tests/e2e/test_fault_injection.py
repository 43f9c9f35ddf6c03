"""Fault injection, CI-sized: for each kind of stop (SIGKILL, SIGINT, SIGTERM, two SIGINTs),
50 real runs of a random backlog of scripted agents, each hit at a random moment: before,
during and after task claims, prompt writes, agent output, task-file rewrites and record
writes. After each, recovery runs (`cub runs list`) and tests/helpers/faults.py checks that:

- every run has a whole, decodable run.json in a terminal state, and its journal agrees;
- every *.json under .cub/ decodes, and every events.jsonl line does, numbered 1, 2, 3, ...;
- the task file decodes and no task is left `in_progress`;
- no agent process (found by an environment token, setsid() escapees included) survives;
- for the signals: the right state and reason, cub's exit code is its record's, one run only,
  no traceback.

Trials are seeded (`FAULT_INJECTION_SEED` shifts the seeds; default 0); a failure names its seed
and directory, and `tools/soak/fault_injection.py --kind KIND --seed N --keep` replays it. The
large run is the soak: `tools/soak/fault_injection.py --trials 1000`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.faults import KINDS, run_trials

TRIALS = 50
WORKERS = 4

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("kind", KINDS)
def test_fault_injection(kind: str, tmp_path: Path) -> None:
    first = int(os.environ.get("FAULT_INJECTION_SEED", "0"))
    summary = run_trials(kind, range(first, first + TRIALS), tmp_path, workers=WORKERS)

    assert summary.trials == TRIALS
    shown = "\n\n".join(summary.failures[:3])
    assert not summary.failures, (
        f"{len(summary.failures)} of {summary.trials} {kind} trials failed "
        f"(the first {min(3, len(summary.failures))} below):\n\n{shown}"
    )
    # The sample must actually reach the interesting endings, not only finish first.
    endings = " ".join(summary.endings)
    if kind == "sigkill":
        assert "by recovery" in endings, summary.endings
    elif kind == "double_sigint":
        assert "force_killed" in endings, summary.endings
    else:
        assert "interrupted" in endings, summary.endings
