"""`cub run` end to end: validating the command line, picking a mode, and driving the run to its
terminal record."""
