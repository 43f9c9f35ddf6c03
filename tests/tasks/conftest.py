from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

# A stand-in for the beads CLI: answers the `bd` subcommands cub uses, keeping its state in
# .beads/fake-bd.json (cwd is the project) and logging every call to .beads/fake-bd.log.
FAKE_BD = r"""
import json, os, sys
from pathlib import Path

state_path = Path(".beads/fake-bd.json")
state = json.loads(state_path.read_text()) if state_path.exists() else {"issues": [], "next": 1}
with open(".beads/fake-bd.log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")

def save():
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_path)

def find(issue_id):
    for issue in state["issues"]:
        if issue["id"] == issue_id:
            return issue
    print(f"Error: issue {issue_id} not found", file=sys.stderr)
    sys.exit(1)

def options(args):
    found, rest, i = {}, [], 0
    while i < len(args):
        if args[i].startswith("-") and args[i] != "--json":
            found[args[i]] = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    return found, rest

args = sys.argv[1:]
if "--json" not in args:
    print("fake bd only speaks --json", file=sys.stderr)
    sys.exit(2)
command, opts_and_args = args[0], args[1:]
opts, rest = options(opts_and_args)
if command == "list":
    issues = state["issues"]
    if os.environ.get("FAKE_BD_LIST_NO_DEPS"):
        issues = [{k: v for k, v in i.items() if k != "dependencies"} for i in issues]
    print(json.dumps(issues))
elif command == "show":
    issue = dict(find(rest[0]))
    by_id = {i["id"]: i for i in state["issues"]}
    issue["dependencies"] = [
        {"id": d["depends_on_id"], "title": by_id.get(d["depends_on_id"], {}).get("title"),
         "status": by_id.get(d["depends_on_id"], {}).get("status"),
         "dependency_type": d["type"]}
        for d in issue.get("dependencies", [])
    ]
    print(json.dumps([issue]))
elif command == "update":
    issue = find(rest[0])
    for flag in ("--status", "--assignee", "--notes"):
        if flag in opts:
            key = flag[2:]
            if opts[flag] == "":
                issue.pop(key, None)
            else:
                issue[key] = opts[flag]
    save()
    print(json.dumps(issue))
elif command == "close":
    issue = find(rest[0])
    issue.update(status="closed", close_reason=opts.get("--reason", ""),
                 closed_at="2025-01-01T00:00:00Z")
    save()
    print(json.dumps([issue]))
elif command == "create":
    issue_id = opts.get("--id") or f"bd-{state['next']}"
    state["next"] += 1
    issue = {"id": issue_id, "title": rest[0], "description": opts.get("-d", ""),
             "status": "open", "priority": int(opts.get("-p", "2")),
             "issue_type": opts.get("-t", "task")}
    if "-l" in opts:
        issue["labels"] = opts["-l"].split(",")
    deps = []
    for spec in opts.get("--deps", "").split(","):
        if spec:
            kind, _, target = spec.rpartition(":")
            deps.append({"issue_id": issue_id, "depends_on_id": target, "type": kind or "blocks"})
    if "--parent" in opts:
        deps.append({"issue_id": issue_id, "depends_on_id": opts["--parent"],
                     "type": "parent-child"})
    if deps:
        issue["dependencies"] = deps
    state["issues"].append(issue)
    save()
    print(json.dumps(issue))
else:
    print(f"fake bd: unknown command {command}", file=sys.stderr)
    sys.exit(2)
"""


def write_tasks(path: Path, tasks: Iterable[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    return path


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / ".cub").mkdir(parents=True)
    return root


@pytest.fixture
def fake_bd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `bd` on PATH; returns the bin directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "bd"
    script.write_text(f"#!{sys.executable}\n{FAKE_BD}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def seed_beads(project: Path, issues: list[dict[str, object]]) -> Path:
    beads = project / ".beads"
    beads.mkdir(exist_ok=True)
    state = beads / "fake-bd.json"
    state.write_text(json.dumps({"issues": issues, "next": len(issues) + 1}))
    return state
