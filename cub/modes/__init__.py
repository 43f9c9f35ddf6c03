"""Run modes other than the plain loop. Each prepares its context, then drives the same machine."""
