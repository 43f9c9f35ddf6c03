"""Fault injection, CI-sized: for each kind of stop (SIGKILL, SIGINT, SIGTERM, two SIGINTs), 30
real runs of a random backlog of scripted agents, each hit at a random moment: before, during
and after task claims, prompt writes, agent output, task-file rewrites and record writes; and
20 `natural` runs that nobody stops, whose ending the plan predicts. Trials also draw issue
13's endings: a token budget crossed by an agent's final usage report, cub's stdout closed by
its reader (EPIPE), an agent deleting every *.lock and asking `cub status`, and in `--in-place`
runs an agent deleting or corrupting the task file. After each, recovery runs (`cub runs list`)
and tests/helpers/faults.py checks that:

- every run has a whole, decodable run.json in a terminal state, and its journal agrees;
- every record (*.json under .cub/ and the runs) decodes, and every events.jsonl line does,
  numbered 1, 2, 3, ...;
- the task file decodes and no claim is stranded (no task `in_progress`; after a deleted or
  corrupted task file is put back, the next `cub run` settles the claims the run left);
- no finished task is reopened: every task whose attempt succeeded is closed, and the commit
  its agent made is on the run's branch;
- recorded usage = agent-reported usage, per task and in the run's totals;
- no agent process (found by an environment token, setsid() escapees included) survives;
- a `cub status` after an agent deleted the locks did not take the live run for dead;
- for the signals: the right state and reason, cub's exit code is its record's, one run only,
  no traceback; for `natural`: the predicted ending.

Trials are seeded (`FAULT_INJECTION_SEED` shifts the seeds; default 0); a failure names its seed
and directory, and `tools/soak/fault_injection.py --kind KIND --seed N --keep` replays it. The
large run is the soak: `tools/soak/fault_injection.py --trials 1000`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.faults import KINDS, run_trials

TRIALS = {"natural": 20}
SIGNAL_TRIALS = 30
WORKERS = 4

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("kind", KINDS)
def test_fault_injection(kind: str, tmp_path: Path) -> None:
    first = int(os.environ.get("FAULT_INJECTION_SEED", "0"))
    trials = TRIALS.get(kind, SIGNAL_TRIALS)
    summary = run_trials(kind, range(first, first + trials), tmp_path, workers=WORKERS)

    assert summary.trials == trials
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
    elif kind == "natural":
        assert "token_budget" in endings, summary.endings
        assert "task_file_changed" in endings, summary.endings
    else:
        assert "interrupted" in endings, summary.endings
    # ... and go through issue 13's cases (where nothing stops the run first, all of them).
    drawn = ["budget", "stdout_closed", "in_place"]
    if kind == "natural":
        drawn += ["locks_deleted", "task_file_deleted", "task_file_corrupted"]
    for feature in drawn:
        assert summary.features.get(feature), (feature, summary.features)
