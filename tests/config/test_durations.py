from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cub.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        (" 2m ", 120.0),
        ("0", 0.0),
        ("1d", 86400.0),
    ],
)
def test_accepted_forms(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", [-1, -0.5, "-5s", "-5", "abc", "", "10 minutes", "1h 30m", "5m5m", "nan", "inf", True]
)
def test_rejected_forms_say_what_is_accepted(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "expected" in message or "given twice" in message
    if "expected" in message:
        assert "10s" in message and "1h30m" in message


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (10, "10s"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (59.96, "1m"),
    ],
)
def test_format_duration(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


@given(st.floats(min_value=0, max_value=10_000_000, allow_nan=False))
def test_format_reads_back(seconds: float) -> None:
    back = parse_duration(format_duration(seconds))
    tolerance = 0.0005 if seconds < 0.9995 else 0.05 if seconds < 59.95 else 0.5
    assert abs(back - seconds) <= tolerance + 1e-9
