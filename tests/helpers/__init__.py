"""Shared test helpers: real git repositories, scripted agents, and the cub command."""
