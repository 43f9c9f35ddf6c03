"""`--parallel N`: each ready task as a child run in a worktree of its own, merged back in task
order."""
