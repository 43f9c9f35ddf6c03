"""The search an agent's output goes through for the default secret shapes
(`cub.records.secret_search`): Hyperscan's first look only ever passes a part RE2 would find
nothing in, so what is found with it is exactly what RE2 alone finds; it folds case as Python
does; and a secret anywhere in megabytes of output, in any part, is masked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cub.records import secret_search
from cub.records.redact import DEFAULT_SECRET_PATTERNS, MASK, Redactor, _defaults_scan
from tests.records.test_redact import KEYS, ORDINARY_OUTPUT
from tests.records.test_redact_lines import LINES, PIECES, case_insensitive_letters, text_of

REPO = Path(__file__).resolve().parents[2]


def search() -> secret_search.ShapeSearch:
    found = _defaults_scan()
    assert found is not None
    return found


def without_gate() -> secret_search.ShapeSearch:
    return secret_search.ShapeSearch(search()._exact, None)


def test_hyperscan_takes_the_first_look_where_it_has_a_wheel() -> None:
    # pyproject.toml installs it on Linux x86-64, where these tests run.
    assert search().gated


@settings(max_examples=400, deadline=None)
@given(LINES)
def test_the_first_look_passes_only_what_holds_nothing(pieces: list[tuple[int, bool]]) -> None:
    data = text_of(pieces)
    assert list(search().spans(data)) == list(without_gate().spans(data))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_searched_as_by_re2_alone(noise: bytes) -> None:
    for data in (noise + b"\n", noise + b"\n" + PIECES[0] + b"\n"):
        assert list(search().spans(data)) == list(without_gate().spans(data))


def test_every_letter_python_folds_beyond_ascii_is_written_out() -> None:
    # Only a cased character can match a letter caselessly; Python takes exactly the long s
    # and the Kelvin sign for one of the letters of the defaults' case-insensitive parts.
    letters = set().union(*(case_insensitive_letters(p) for p in DEFAULT_SECRET_PATTERNS))
    cased = [
        chr(code)
        for code in range(0x80, 0x110000)
        if not 0xD800 <= code < 0xE000 and chr(code).lower() != chr(code).upper()
    ]
    beyond = {
        letter: {char for char in cased if re.fullmatch(f"(?i:{letter})", char)}
        for letter in letters
    }
    assert {letter: chars for letter, chars in beyond.items() if chars} == {
        letter: {char} for letter, char in secret_search.FOLDED_BEYOND_ASCII.items()
    }


@pytest.mark.parametrize(
    "line",
    [
        "AWS_\u017fECRET_ACCESS_KEY=" + "Ab" * 20,
        "aws_secret_access_\u212aey: " + "A" * 20 + "b" * 20,
        "aw\u017f_\u017fecret_acce\u017f\u017f_\u212aey=" + "x9" * 20,
        "SecretAccessKey: " + "Q" * 40,
        "Authorization: BEARER " + "t" * 30,
    ],
)
def test_a_label_written_with_characters_python_folds_is_still_found(line: str) -> None:
    data = f"ordinary output\n{line}\n".encode()
    assert list(search().spans(data)), "the first look passed a labelled secret"
    assert Redactor().lines(data).endswith(f"{MASK}\n")


def test_the_gate_shape_of_a_nested_or_escaped_group() -> None:
    assert secret_search.gate_shape(r"x(?i:a(?:sk)?)") == (
        r"x(?i:a(?:(?:s|\xc5\xbf)(?:k|\xe2\x84\xaa))?)"
    )
    assert secret_search.gate_shape(r"(?i:\s+k)") == r"(?i:\s+(?:k|\xe2\x84\xaa))"
    assert secret_search.gate_shape("ghp_[A-Za-z]{36}") == "ghp_[A-Za-z]{36}"


def ordinary_output(size: int) -> bytes:
    lines = "".join(f"{line}\n" for line in ORDINARY_OUTPUT).encode()
    return lines * (size // len(lines) + 1)


def test_a_secret_in_any_part_of_a_large_read_is_masked() -> None:
    # Several parts' worth: the read is searched in parts at once, the secret past the first.
    filler = ordinary_output(4 * secret_search.SCAN_PART_BYTES)
    for name, key in KEYS.items():
        data = filler + f"the key is {key}.\n".encode() + filler + filler
        redacted = Redactor().lines(data)
        assert key not in redacted and f"the key is {MASK}." in redacted, name
        assert redacted.count("\n") == data.count(b"\n")


def test_a_key_body_line_among_long_runs_of_key_characters_is_masked() -> None:
    # Runs of 64 key characters everywhere: every part goes on to RE2, which finds the line.
    filler = (b"x" * 98 + b"\n") * 20000
    data = filler + b"  " + b"Ab" * 32 + b"\n" + filler
    redacted = Redactor().lines(data)
    assert redacted.count(MASK) == 1 and ("Ab" * 32) not in redacted


@pytest.mark.parametrize(
    ("missing", "how_searched", "warning"),
    [
        # An image without RE2's system dependencies (libstdc++): slower, never wrong.
        ("re2", "_defaults_scan() is None", "google-re2 cannot be loaded"),
        # A platform without a Hyperscan wheel: RE2 searches every part.
        ("hyperscan", "_defaults_scan().gated is False", ""),
    ],
)
def test_without_an_engine_output_is_still_redacted(
    tmp_path: Path, missing: str, how_searched: str, warning: str
) -> None:
    script = tmp_path / "check.py"
    script.write_text(
        "import sys\n"
        f"sys.modules[{missing!r}] = None  # importing it now raises ImportError\n"
        "from cub.records.redact import Redactor, _defaults_scan\n"
        "data = b'x\\nkey ghp_' + b'A' * 36 + b'\\n' + b'Ab' * 32 + b'\\r\\n'\n"
        f"print(repr(Redactor().lines(data)), {how_searched})\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == repr(f"x\nkey {MASK}\n{MASK}\r\n") + " True"
    assert warning in done.stderr and (warning or done.stderr == "")
