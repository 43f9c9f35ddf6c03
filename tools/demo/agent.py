#!/usr/bin/env python3
"""A deterministic stand-in for a coding agent, for cub's demo (tools/demo/run).

It reads the task id from $CUB_TASK_ID, does a fixed piece of work for it (writes a file,
commits), prints progress and a usage line the `command` harness understands, and for the
task titled "Deploy" reports itself stuck, as a real agent does when it needs a person.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

WORK = {
    "demo-1": ("greet.py", 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n'),
    "demo-2": (
        "test_greet.py",
        "from greet import greet\n\n\ndef test_greet():\n"
        '    assert greet("cub") == "Hello, cub!"\n',
    ),
    "demo-3": ("CHANGELOG.md", "# Changelog\n\n- Added greet() and its test.\n"),
}


def main() -> int:
    task_id = os.environ.get("CUB_TASK_ID", "?")
    prompt = sys.stdin.read()
    print(f"demo agent: working on {task_id} ({len(prompt)} characters of prompt)", flush=True)
    time.sleep(0.2)
    print(
        json.dumps(
            {
                "cub_usage": {
                    "input_tokens": len(prompt) // 4,
                    "output_tokens": 120,
                    "cost_usd": 0.0012,
                }
            }
        ),
        flush=True,
    )
    if task_id not in WORK:
        print(
            "<stuck>deploying needs production credentials that are not in the repo</stuck>",
            flush=True,
        )
        return 1
    name, text = WORK[task_id]
    with open(name, "w", encoding="utf-8") as fh:
        fh.write(text)
    subprocess.run(["git", "add", name], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"{task_id}: add {name}"], check=True)
    print(f"demo agent: committed {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
