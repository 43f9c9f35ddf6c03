"""`--gh-issue`: an issue fetched from GitHub as the run's one task, and a comment on it at the
end."""
