"""A seeded fuzz of every kind of input cub reads (tests/helpers/fuzz.py): configs, task files
(JSONL, prd.json, what `bd` prints), flag sets and argv bytes. Each kind runs in a process of
its own (cub runs in it, signal handlers and all); `tools/soak/fuzz_input.py` runs thousands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.fuzz import KINDS

# A few hundred examples per kind (the task-file kind checks two commands per example).
EXAMPLES = {"configs": 200, "tasks": 150, "prd": 150, "beads": 150, "flags": 300, "argv": 300}
SEED = 20261203


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_never_crashes_cub(kind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.helpers.fuzz", kind, str(EXAMPLES[kind]), str(SEED)],
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.startswith(f"{kind}: ") and " 0 problems" in done.stdout, done.stdout
