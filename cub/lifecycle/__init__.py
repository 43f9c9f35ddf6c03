"""One run's life: the state machine and its context, the handle the loop and the modes work
through and end a run by, the run's settings and hooks, and the signals that stop it."""
