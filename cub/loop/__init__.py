"""The loop: select a task, run an attempt, settle its outcome, until the run ends."""
