"""cub: drive AI coding agents through a task backlog, leaving a durable record of every run."""

__version__ = "0.1.0"
