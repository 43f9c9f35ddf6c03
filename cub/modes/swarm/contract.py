"""What a swarm run's parent and its children agree on, on both sides of the network: where a
child starts from, where its credentials are, and how its service is labelled."""

from __future__ import annotations

from pathlib import Path

# The parent pushes the run branch's head here for each child to clone.
BASE_REF_PREFIX = "refs/cub/base/"
# Credentials arrive as Docker secrets: the file `cub-env-NAME` holds NAME's value.
SECRETS_DIR = Path("/run/secrets")
SECRET_PREFIX = "cub-env-"
LABEL_RUN = "cub.run_id"
LABEL_PARENT = "cub.parent_run_id"
LABEL_TASK = "cub.task_id"
# A running child prints its run's budget use on a line of its own, prefixed with this, as it
# changes: its service's log is how the parent shares the run's budgets among live children.
USAGE_MARK = "cub-usage "
