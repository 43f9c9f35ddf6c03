"""Hook scripts, and the shell commands cub runs beside an agent (hooks, verify), each in a
process group of its own."""
