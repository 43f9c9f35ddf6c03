"""A task file is read in one call of the decoder when its lines are one task each; whatever
the file, what is read (or the error and the line it names) is what reading it line by line
gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.errors import TaskFileError
from cub.tasks import jsonl
from cub.tasks.jsonl import JsonlBackend, JsonlDocument, decode_line
from cub.tasks.model import Task


def line_by_line(data: bytes) -> list[Task] | str:
    """What reading ``data`` a line at a time gives: its tasks, or the error's message."""
    tasks: dict[str, Task] = {}
    first_line: dict[str, int] = {}
    try:
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line or line.isspace():
                continue
            task = decode_line(line, "tasks.jsonl", number)
            if task.id in tasks:
                return f"duplicate {task.id} on {number} (first on {first_line[task.id]})"
            tasks[task.id], first_line[task.id] = task, number
    except TaskFileError as exc:
        return str(exc)
    return list(tasks.values())


def whole(data: bytes) -> list[Task] | str:
    try:
        return JsonlDocument(data, "tasks.jsonl").tasks
    except TaskFileError as exc:
        message = str(exc)
        if "duplicate task id" in message:
            # "tasks.jsonl:3: duplicate task id 'a' (first on line 1)", as `line_by_line` says it
            number = message.split(":")[1]
            task_id = message.split("'")[1]
            first = message.rsplit(" ", 1)[1].rstrip(")")
            return f"duplicate {task_id} on {number} (first on {first})"
        return message


TASK = '{"id": "%s", "title": "Task %s"}'

# Files whose values are not their lines: a decoder reading values one after another, whatever
# lines they are on, would read tasks out of each of them.
NOT_ONE_TASK_A_LINE = [
    # one object over two lines
    '{"id": "a",\n"title": "A"}\n',
    # two on one line, with and without a space or a comma between
    TASK % ("a", "a") + TASK % ("b", "b") + "\n",
    TASK % ("a", "a") + " " + TASK % ("b", "b") + "\n",
    # a line left open and closed by the next, the count made up by a line holding two: as many
    # values as lines, each line starting with "{"
    '{"id": "a", "title": "A", "x": [{"b": 1},\n{"c": 2}]}\n'
    + TASK % ("b", "b")
    + TASK % ("c", "c")
    + "\n",
    # the same, the first line indented
    ' {"id": "a", "title": "A", "x": [{"b": 1},\n{"c": 2}]}\n'
    + TASK % ("b", "b")
    + TASK % ("c", "c")
    + "\n",
]


@pytest.mark.parametrize("text", NOT_ONE_TASK_A_LINE)
def test_a_file_whose_values_are_not_its_lines_is_rejected_naming_the_line(text: str) -> None:
    with pytest.raises(TaskFileError, match=r"^tasks\.jsonl:1: invalid JSON"):
        JsonlDocument(text.encode(), "tasks.jsonl")


@pytest.mark.parametrize(
    "text",
    [
        TASK % ("a", "a") + "\n\n" + TASK % ("b", "b") + "\n",  # a blank line
        "  " + TASK % ("a", "a") + "\t\n",  # whitespace around a task
        TASK % ("a", "a") + "\r\n" + TASK % ("b", "b") + "\r\n",  # CRLF
        TASK % ("a", "a"),  # no newline at the end
        TASK % ("a", "a") + "\n" + TASK % ("a", "a") + "\n",  # a duplicate
        TASK % ("..", "a") + "\n",
        TASK % ("a..b", "a") + "\n",
        TASK % (".", "a") + "\n",
        TASK % ("x" * 129, "a") + "\n",
        TASK % ("a/b", "a") + "\n",
        TASK % ("", "a") + "\n",
        TASK % ("a", "a") + "\n" + TASK % ("b\\nc", "b") + "\n",  # a newline in an id
        TASK % ("x" * 128, "a") + "\n" + TASK % ("-._", "b") + "\n",  # the longest, the oddest
        TASK % ("a", "a") + "\n" + '{"id": "b"}\n',  # no title
        TASK % ("a", "a") + "\n" + '{"id": "b\\u0000", "title": "B"}\n',
        TASK % ("a", "a") + "\n" + '["not", "an", "object"]\n',
        "",
        "\n\n",
    ],
)
def test_files_of_every_other_shape_read_as_line_by_line(text: str) -> None:
    assert whole(text.encode()) == line_by_line(text.encode())


def test_a_file_of_one_task_a_line_is_read_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_line_by_line(*args: object) -> None:
        raise AssertionError("read line by line")

    monkeypatch.setattr(jsonl, "decode_line", not_line_by_line)
    monkeypatch.setattr(jsonl, "_decode_checked", not_line_by_line)
    lines = [
        {"id": f"t-{i}", "title": f"T{i}", "priority": f"P{i % 5}", "dependsOn": [f"t-{i - 1}"]}
        for i in range(1, 50)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    document = JsonlDocument(data, "tasks.jsonl")
    assert [task.id for task in document.tasks] == [line["id"] for line in lines]
    assert document.tasks[2].priority == 3 and document.tasks[2].depends_on == ["t-2"]
    assert document.position("t-7") == 6 and document.location(6) == "tasks.jsonl:7"
    assert document.to_bytes() == data


# Lines made of pieces that are tasks, parts of tasks, or not JSON at all.
_PIECES = st.sampled_from(
    [
        TASK % ("a", "a"),
        TASK % ("b", "b"),
        TASK % ("c-1.x", "c"),
        '{"id": "d", "title": "D", "dependsOn": ["a"], "priority": "P1"}',
        '{"id": "e", "title": "E", "x": [{"y": 1}',
        '{"z": 2}]}',
        '{"id": "f",',
        '"title": "F"}',
        "{",
        "}",
        " ",
        ",",
        "[",
        "]",
        '"',
        "\r",
        "\\u0000",
        TASK % ("..", "g"),
        TASK % ("", "h"),
        TASK % ("i\\nj", "i"),
        TASK % (".", "k"),
    ]
)
_LINES = st.lists(st.lists(_PIECES, max_size=3).map("".join), max_size=6)


@settings(max_examples=400, deadline=None)
@given(_LINES, st.booleans())
def test_any_file_reads_as_line_by_line(lines: list[str], newline_at_end: bool) -> None:
    text = "\n".join(lines) + ("\n" if newline_at_end and lines else "")
    assert whole(text.encode()) == line_by_line(text.encode())


@pytest.mark.parametrize(
    ("needle", "near_miss"), [(b"in_progress", b"in_progresS"), (b"\\u0069", b"\\n0069")]
)
@pytest.mark.parametrize("offset", [-12, -11, -6, -1, 0, 1])
def test_a_claim_is_found_wherever_it_falls_in_the_file(
    tmp_path: Path, needle: bytes, near_miss: bytes, offset: int
) -> None:
    # The file is searched a piece at a time: a word cut by the end of a piece is still found.
    piece = 1 << 18
    path = tmp_path / ".cub" / "tasks.jsonl"
    path.parent.mkdir()
    backend = JsonlBackend(path, tmp_path)
    head = b"x" * (piece + offset)
    path.write_bytes(head + needle + b"x" * 100)
    assert backend.may_hold_claims()
    path.write_bytes(head + near_miss + b"x" * 100)
    assert not backend.may_hold_claims()
