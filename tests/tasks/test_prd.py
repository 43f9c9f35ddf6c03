from __future__ import annotations

import json
from pathlib import Path

import pytest

from cub.errors import TaskFileError
from cub.tasks.prd import PrdBackend


def write_prd(project: Path, document: object) -> Path:
    path = project / "prd.json"
    path.write_text(json.dumps(document, indent=4))
    return path


def test_round_trip_keeps_other_keys(project: Path) -> None:
    path = write_prd(
        project,
        {
            "project": "demo",
            "branchName": "feature/x",
            "tasks": [
                {"id": "p-1", "title": "One", "priority": "P1", "extra": {"keep": True}},
                {"id": "p-2", "title": "Two", "dependsOn": ["p-1"]},
            ],
            "meta": [1, 2, 3],
        },
    )
    store = PrdBackend(path, project, by_hand=True)  # closes by hand go into the file
    assert [t.id for t in store.load()] == ["p-1", "p-2"]
    claimed = store.claim_next("r", epic=None, label=None)
    assert claimed is not None and claimed.id == "p-1"
    store.close("p-1", "r", reason="done")
    added = store.add("Three", depends_on=["p-2"])
    assert added.id == "p-3"

    document = json.loads(path.read_text())
    assert list(document) == ["project", "branchName", "tasks", "meta"]
    assert document["meta"] == [1, 2, 3]
    first, second, third = document["tasks"]
    assert first["extra"] == {"keep": True} and first["priority"] == "P1"
    assert first["status"] == "closed" and first["close_reason"] == "done"
    assert second == {"id": "p-2", "title": "Two", "dependsOn": ["p-1"]}
    assert third["dependsOn"] == ["p-2"]
    assert [t.id for t in store.load()] == ["p-1", "p-2", "p-3"]
    assert store.claim_next("r", epic=None, label=None).id == "p-2"  # type: ignore[union-attr]


def test_errors_name_file_and_index(project: Path) -> None:
    path = write_prd(
        project,
        {
            "tasks": [
                {"id": "a", "title": "A"},
                {"id": "b", "title": "B"},
                {"id": "c", "title": "C"},
                {"id": "d", "title": "D", "priority": "urgent"},
            ]
        },
    )
    with pytest.raises(TaskFileError) as caught:
        PrdBackend(path, project).load()
    assert str(caught.value).startswith("prd.json: $.tasks[3].priority: expected int or one of")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{"tasks": [{"id": "../up", "title": "x"}]}', "prd.json: $.tasks[0].id: invalid task id"),
        (
            '{"tasks": [{"id": "a", "title": "x"}, {"id": "a", "title": "y"}]}',
            "prd.json: $.tasks[1].id: duplicate task id 'a'",
        ),
        ('{"tasks": {}}', "prd.json: $.tasks: Expected array"),
        ("[1]", 'prd.json: $: expected a JSON object with a "tasks" array'),
        ('{\n"tasks": [\n  {"id": "a",}\n]}', "prd.json: line 3: invalid JSON"),
    ],
)
def test_document_errors(project: Path, document: str, expected: str) -> None:
    path = project / "prd.json"
    path.write_text(document)
    with pytest.raises(TaskFileError) as caught:
        PrdBackend(path, project).load()
    assert str(caught.value).startswith(expected)


def test_problems_name_the_index(project: Path) -> None:
    path = write_prd(project, {"tasks": [{"id": "a", "title": "A", "dependsOn": ["nope"]}]})
    assert PrdBackend(path, project).problems() == [
        "prd.json: $.tasks[0]: task 'a' depends on unknown task 'nope' (never ready)"
    ]
