from __future__ import annotations

import msgspec
import pytest

from cub.errors import InvalidTaskId
from cub.tasks.model import TASK_ENTRY_DECODER, parse_priority, validate_task_id


def decode(line: str):  # type: ignore[no-untyped-def]
    return TASK_ENTRY_DECODER.decode(line.encode()).to_task()


@pytest.mark.parametrize("task_id", ["cub-1", "a", "A.b_c-9", "bd-03r", "x" * 128, "v1.2"])
def test_valid_ids(task_id: str) -> None:
    validate_task_id(task_id)


@pytest.mark.parametrize(
    "task_id", ["../etc", "a/b", "..", ".", "", "a..b", "x" * 129, "a b", "tab\t", "é", None, 5]
)
def test_invalid_ids(task_id: object) -> None:
    with pytest.raises(InvalidTaskId, match="invalid task id"):
        validate_task_id(task_id)


def test_invalid_id_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_task_id("../x")


@pytest.mark.parametrize(("given", "expected"), [(0, 0), (4, 4), ("P1", 1), ("p3", 3), ("2", 2)])
def test_parse_priority(given: int | str, expected: int) -> None:
    assert parse_priority(given) == expected


@pytest.mark.parametrize("given", [5, -1, "P5", "high", True])
def test_parse_priority_rejects(given: object) -> None:
    with pytest.raises(ValueError, match="0-4 or P0-P4"):
        parse_priority(given)  # type: ignore[arg-type]


def test_priority_name_is_normalised_to_int() -> None:
    task = decode('{"id": "a", "title": "A", "priority": "P1"}')
    assert task.priority == 1
    assert task.priority_name == "P1"


def test_both_dependency_spellings() -> None:
    assert decode('{"id": "a", "title": "A", "dependsOn": ["x"]}').depends_on == ["x"]
    assert decode('{"id": "a", "title": "A", "depends_on": ["y"]}').depends_on == ["y"]
    both = decode('{"id": "a", "title": "A", "dependsOn": ["x"], "depends_on": ["y", "x"]}')
    assert both.depends_on == ["x", "y"]


def test_beads_dependency_objects() -> None:
    task = decode(
        '{"id": "a", "title": "A", "dependencies": ['
        '{"issue_id": "a", "depends_on_id": "b", "type": "blocks"},'
        '{"issue_id": "a", "depends_on_id": "e", "type": "parent-child"},'
        '{"issue_id": "a", "depends_on_id": "r", "type": "related"}]}'
    )
    assert task.depends_on == ["b"]
    assert task.parent == "e"


def test_defaults_and_acceptance_criteria_forms() -> None:
    task = decode('{"id": "a", "title": "A"}')
    assert (task.status, task.priority, task.issue_type, task.attempts) == ("open", 2, "task", 0)
    assert task.labels == [] and task.depends_on == [] and task.description == ""
    assert (
        decode('{"id": "a", "title": "A", "acceptance_criteria": "works"}').acceptance_criteria
        == "works"
    )
    listed = decode('{"id": "a", "title": "A", "acceptance_criteria": ["x", "y"]}')
    assert listed.acceptance_criteria == ["x", "y"]


def test_task_is_immutable() -> None:
    task = decode('{"id": "a", "title": "A"}')
    with pytest.raises(AttributeError):
        task.status = "closed"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(task))["id"] == "a"


def test_every_field_of_a_line_reaches_the_task_field_of_its_name() -> None:
    # `to_task` passes Task's fields by position: a field added to Task, or two reordered,
    # must not shift a value into its neighbour.
    line = {
        "id": "t-1",
        "title": "Title",
        "description": "Description",
        "status": "retry",
        "priority": "P3",
        "issue_type": "bug",
        "labels": ["a-label"],
        "dependsOn": ["t-0"],
        "parent": "epic-1",
        "acceptance_criteria": ["criterion"],
        "assignee": "someone",
        "attempts": 4,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-02T00:00:00+00:00",
        "closed_at": "2025-01-03T00:00:00+00:00",
        "close_reason": "a reason",
        "notes": "some notes",
    }
    task = TASK_ENTRY_DECODER.decode(msgspec.json.encode(line)).to_task()
    expected = {**line, "priority": 3, "depends_on": ["t-0"]}
    del expected["dependsOn"]
    assert msgspec.structs.asdict(task) == expected
    assert set(expected) == set(task.__struct_fields__)
