"""The task backlog: the task model, selection rules, and the backends that store tasks."""
