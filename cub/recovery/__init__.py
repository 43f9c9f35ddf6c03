"""Runs whose runner died: finalised from what they left on disk by the next cub command."""
