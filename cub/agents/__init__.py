"""Running agents: the supervisor that owns an agent's process tree, and the per-agent adapters."""
