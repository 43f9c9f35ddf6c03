"""`--sandbox`: the run inside a container: its image, its workspace, and bringing its results
home."""
