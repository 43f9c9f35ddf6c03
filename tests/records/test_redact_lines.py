"""Redacting many lines at once (`Redactor.lines`, how an agent's output is redacted a read at a
time) gives exactly what redacting each line on its own gives: the search that picks the lines
to look at may only ever find more, never fewer."""

from __future__ import annotations

import re
import string

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.records.redact import DEFAULT_SECRET_PATTERNS, MASK, Redactor, _line_scan
from tests.records.test_redact import KEYS, ORDINARY_OUTPUT, PEMS


def line_by_line(redactor: Redactor, data: bytes) -> str:
    """What each line gives on its own: decoded, its line ending kept out of the match."""
    out = []
    for line in data.decode("utf-8", "replace").split("\n")[:-1]:
        cr = "\r" if line.endswith("\r") else ""
        out.append(redactor(line[: len(line) - len(cr)]) + cr + "\n")
    return "".join(out)


# Lines an agent prints: secrets of every kind (alone and in context), a private key's lines,
# near misses, ordinary output, text that is not ASCII or not UTF-8 at all.
PIECES: list[bytes] = [
    *(key.encode() for key in KEYS.values()),
    *(f"export TOKEN={key} # set".encode() for key in list(KEYS.values())[::5]),
    *(line.encode() for pem in PEMS.values() for line in pem.splitlines()[:3]),
    *(line.encode() for line in ORDINARY_OUTPUT),
    b"Authorization: bEaReR abcdefghijklmnopqrstuvwxyz0123",
    "AWS_ſECRET_ACCESS_KEY=".encode() + KEYS["npm"][:40].encode(),  # a long s folds to "s"
    b"aws_secret_access_Key: " + b"A" * 20 + b"b" * 20,  # the Kelvin sign
    b"  " + b"Ab" * 32 + b"  ",  # a key body line, indented
    b"Ab" * 35,
    b"ab" * 32,  # one case only: not a key
    b"task-sk-ABCDEFGHIJKLMNOPQRSTUVWX",
    b"corp-abcd corp-ABCD secret",
    b"token=secret",
    b"\xff\xfe broken \xc3 utf-8 sk-" + b"Z" * 20,
    "héllo wörld — ghp_".encode() + b"x" * 36,
    b"",
    b"x" * 98,
]


def text_of(pieces: list[tuple[int, bool]]) -> bytes:
    return b"".join(PIECES[i] + (b"\r\n" if crlf else b"\n") for i, crlf in pieces)


LINES = st.lists(st.tuples(st.integers(0, len(PIECES) - 1), st.booleans()), max_size=40)

CONFIGURED = [
    ["corp-[a-z]{4}"],
    ["(?i)corp-[a-z]{4}", r"secret$"],
    [r"^token=\S+"],
    [r"key=\s*\S+"],  # \s may reach across a line: more found, never less
    [r"(?<=token=)\w+"],  # look-behind: every line is looked at
    [r"secret\Z"],
]


@settings(max_examples=300, deadline=None)
@given(LINES)
def test_many_lines_at_once_redact_as_each_line_alone(pieces: list[tuple[int, bool]]) -> None:
    data = text_of(pieces)
    redactor = Redactor()
    assert redactor.lines(data) == line_by_line(redactor, data)


@pytest.mark.parametrize("configured", CONFIGURED, ids=str)
@settings(max_examples=100, deadline=None)
@given(pieces=LINES)
def test_configured_patterns_over_many_lines_redact_as_each_line_alone(
    configured: list[str], pieces: list[tuple[int, bool]]
) -> None:
    data = text_of(pieces)
    for redactor in (Redactor([*DEFAULT_SECRET_PATTERNS, *configured]), Redactor(configured)):
        assert redactor.lines(data) == line_by_line(redactor, data)


def test_every_kind_of_key_is_masked_among_many_lines() -> None:
    filler = b"x" * 98 + b"\n"
    for name, key in KEYS.items():
        data = filler * 300 + f"the key is {key}.\n".encode() + filler * 300
        redacted = Redactor().lines(data)
        assert key not in redacted and f"the key is {MASK}." in redacted, name
        assert redacted.count("\n") == 601


def test_patterns_that_depend_on_a_line_end_are_looked_for_line_by_line() -> None:
    # A look-around or the end of the text behaves differently before a newline; such
    # patterns are not searched across lines (every line is redacted on its own instead).
    for unsafe in (r"(?<=a)b", r"a(?!b)", r"a\Z", r"\Aa", r"a*+b", r"(?>a)", r"(?-i:a)"):
        assert _line_scan([unsafe]) is not None
        assert _line_scan([unsafe]).pattern == "", unsafe
    assert _line_scan([r"corp-[a-z]{4}$"]).flags & re.MULTILINE


def case_insensitive_letters(pattern: str) -> set[str]:
    """The letters inside the ``(?i:...)`` groups of ``pattern``."""
    letters: set[str] = set()
    for start in (m.end() for m in re.finditer(r"\(\?i:", pattern)):
        depth, pos = 1, start
        while depth:
            depth += {"(": 1, ")": -1}.get(pattern[pos], 0)
            if pattern[pos] in string.ascii_letters and pattern[pos - 1] != "\\":
                letters.add(pattern[pos].lower())
            pos += 1
    return letters


def test_the_fast_search_folds_case_as_python_does() -> None:
    # The default patterns' case-insensitive parts are found by RE2 (bytes, UTF-8): every
    # character Python takes for one of their letters, RE2 takes too (only cased characters
    # can be one). Not so for every letter: Python takes "İ" for "i", RE2 does not.
    letters = set().union(*(case_insensitive_letters(p) for p in DEFAULT_SECRET_PATTERNS))
    assert letters == set("wsecrtaky")
    cased = [
        chr(code)
        for code in range(0x80, 0x110000)
        if not 0xD800 <= code < 0xE000 and chr(code).lower() != chr(code).upper()
    ]
    assert "\u017f" in cased and "\u212a" in cased  # the long s and the Kelvin sign
    checked = 0
    for letter in sorted(letters):
        python, fast = re.compile(f"(?i:{letter})"), re2.compile(f"(?i:{letter})")
        for char in cased:
            if python.fullmatch(char):
                checked += 1
                assert fast.fullmatch(char.encode()), (letter, hex(ord(char)))
    assert checked >= 2  # there are such characters, and they were looked at
