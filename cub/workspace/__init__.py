"""The working tree a run uses: git, the run's branch, its worktree, and the watch over the
user's checkout."""
