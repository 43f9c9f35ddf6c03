"""One-line explanations of msgspec validation errors, for config and task files alike.

msgspec already knows the key path of a problem (``... - at `$.loop.max_attempts```); this
module only reshapes that into the line a user reads (``$.loop.max_attempts: Expected int >= 1,
got 0``), adds the offending value, the allowed values of an enum and a "did you mean" for a
misspelt key. It never re-validates anything itself.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, NamedTuple, Union

import msgspec

_AT = re.compile(r"^(?P<text>.*) - at (?P<key>`key` in )?`(?P<path>\$[^`]*)`$", re.DOTALL)
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_BAD_ENUM = re.compile(r"^Invalid enum value (?P<value>.*)$")
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")
_MISSING = object()
_BYTE_OFFSET = re.compile(r"\s*\(byte (\d+)\)")


class Problem(NamedTuple):
    path: str  # "$" for the document itself, e.g. "$.loop.max_attempts"
    text: str  # what is wrong there, without the path
    unknown_key: bool = False

    def render(self) -> str:
        if self.unknown_key:
            return f"unknown key {self.path}{self.text}"
        return f"{self.path}: {self.text}"


def describe_validation_error(
    exc: msgspec.ValidationError, *, root_type: Any = None, data: Any = _MISSING
) -> Problem:
    """Explain ``exc``; ``root_type`` and ``data`` (what was decoded) make the text richer."""
    message = str(exc)
    match = _AT.match(message)
    path = match["path"] if match else "$"
    text = match["text"] if match else message
    tokens = _tokens(path)
    expected_type = _type_at(root_type, tokens) if root_type is not None else None

    unknown = _UNKNOWN_FIELD.match(text)
    if unknown:
        name = unknown["name"]
        return Problem(f"{path}.{name}", _suggestion(name, expected_type), unknown_key=True)

    missing = _MISSING_FIELD.match(text)
    if missing:
        return Problem(path, f"missing required key {missing['name']!r}")

    enum = _BAD_ENUM.match(text)
    if match and match["key"]:
        # The bad part is a mapping key (e.g. a harness name under extra_args), not a value.
        key_type = _dict_arg(expected_type, 0)
        return Problem(path, "invalid key: " + _enum_text(enum, key_type, text))
    if enum:
        return Problem(path, _enum_text(enum, expected_type, text))

    text = text.replace("`", "")
    if text.startswith("Expected") and ", got" not in text:
        value = _value_at(data, tokens)
        if value is not _MISSING:
            text += f", got {_show(value)}"
    return Problem(path, text)


def _suggestion(name: str, struct_type: Any) -> str:
    names = _field_names(struct_type)
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _enum_text(enum: re.Match[str] | None, literal_type: Any, fallback: str) -> str:
    if enum is None:
        return fallback.replace("`", "")
    allowed = _literal_values(literal_type)
    if not allowed:
        return fallback.replace("`", "")
    others = "".join(f"{name} or " for name in _other_members(literal_type))
    return f"expected {others}one of {', '.join(map(str, allowed))}, got {enum['value']}"


def _tokens(path: str) -> list[str | int | None]:
    """``$.tasks[3].priority`` → ["tasks", 3, "priority"]; a dict entry ``[...]`` is None."""
    tokens: list[str | int | None] = []
    for name, index in _TOKEN.findall(path[1:]):
        if name:
            tokens.append(name)
        elif index == "...":
            tokens.append(None)
        else:
            tokens.append(int(index))
    return tokens


def _value_at(data: Any, tokens: list[str | int | None]) -> Any:
    node = data
    for token in tokens:
        if token is None:
            return _MISSING  # msgspec does not say which dict key; don't guess
        try:
            node = node[token]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _show(value: Any) -> str:
    try:
        shown = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` so the interesting type is left."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _type_at(root: Any, tokens: list[str | int | None]) -> Any:
    tp = _unwrap(root)
    for token in tokens:
        if isinstance(token, str):
            fields = _fields(tp)
            if token not in fields:
                return None
            tp = _unwrap(fields[token])
        elif typing.get_origin(tp) is list:
            tp = _unwrap(typing.get_args(tp)[0])
        elif typing.get_origin(tp) is dict:
            tp = _unwrap(_dict_arg(tp, 1))
        else:
            return None
    return tp


def _fields(tp: Any) -> dict[str, Any]:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return {f.encode_name: f.type for f in msgspec.structs.fields(tp)}
    return {}


def _field_names(tp: Any) -> list[str]:
    return list(_fields(tp))


def _dict_arg(tp: Any, index: int) -> Any:
    tp = _unwrap(tp)
    if typing.get_origin(tp) is dict:
        return _unwrap(typing.get_args(tp)[index])
    return None


def _literal_values(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return tuple(v for member in typing.get_args(tp) for v in _literal_values(member))
    return ()


def _other_members(tp: Any) -> list[str]:
    """Names of the non-Literal members of a union such as ``int | Literal["P0", ...]``."""
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return []
    names = []
    for member in typing.get_args(tp):
        member = _unwrap(member)
        if typing.get_origin(member) is not Literal and member is not type(None):
            names.append(getattr(member, "__name__", str(member)))
    return names


def nul_character_at(data: Any, path: str = "$") -> str | None:
    """The JSON path of the first key or string in ``data`` holding a NUL character, if any:
    such a string cannot go into an argument, an environment variable or a file name, so it
    is refused where it is read, with its place named."""
    if isinstance(data, str):
        return path if "\x00" in data else None
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and "\x00" in key:
                return f"{path}.{key!r}"
            found = nul_character_at(value, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found = nul_character_at(value, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def json_error_parts(message: str) -> tuple[int | None, str]:
    """A msgspec JSON decode error as (byte offset if it gives one, what is wrong)."""
    found = _BYTE_OFFSET.search(message)
    detail = _BYTE_OFFSET.sub("", message).removeprefix("JSON is malformed: ")
    return (int(found.group(1)) if found else None), detail


def relative_label(path: Path, project_dir: Path) -> str:
    """How messages name a file: relative to the project when it is inside it."""
    try:
        return str(path.relative_to(project_dir))
    except ValueError:
        return str(path)
