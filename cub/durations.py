"""Durations as people write them (``90``, ``"10s"``, ``"1h30m"``, ``"500ms"``), in seconds."""

from __future__ import annotations

import math
import re

# One number-and-unit pair; a duration is one or more of them ("1h30m"). Whole-string matching
# (fullmatch over repeated groups) keeps garbage such as "10 minutes" or "5m-3s" out.
_PART = r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)"
_WHOLE = re.compile(rf"(?:{_PART})+")
_PARTS = re.compile(_PART)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

ACCEPTED_FORMS = (
    "a number of seconds (90, 1.5) or a number with units ms, s, m, h, d "
    "(500ms, 10s, 5m, 1h30m, 2d)"
)


def parse_duration(text: str | int | float) -> float:
    """Seconds as a float; ``ValueError`` naming the accepted forms for anything else."""
    # bool is an int subclass, but `grace: true` is a mistake, not one second.
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: expected {ACCEPTED_FORMS}")
    if isinstance(text, int | float):
        return _checked(float(text), text)
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected {ACCEPTED_FORMS}")
    cleaned = text.strip().lower()
    if cleaned.startswith("-"):
        return _checked(-1.0, text)
    try:
        bare = float(cleaned)
    except ValueError:
        bare = None  # not a bare number: try number-and-unit pairs below
    if bare is not None:
        return _checked(bare, text)
    if not cleaned or _WHOLE.fullmatch(cleaned) is None:
        raise ValueError(f"invalid duration {text!r}: expected {ACCEPTED_FORMS}")
    units_seen: set[str] = set()
    total = 0.0
    for number, unit in _PARTS.findall(cleaned):
        if unit in units_seen:  # "5m5m" is a typo, not ten minutes
            raise ValueError(f"invalid duration {text!r}: unit {unit!r} given twice")
        units_seen.add(unit)
        total += float(number) * _UNIT_SECONDS[unit]
    return _checked(total, text)


def _checked(seconds: float, original: object) -> float:
    # float("nan"), float("inf") and "-5" all parse as numbers but are never a usable timeout.
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"invalid duration {original!r}: must be a finite amount of zero or more; "
            f"expected {ACCEPTED_FORMS}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form that ``parse_duration`` reads back: 0.25 → "250ms", 5400 → "1h30m"."""
    if not math.isfinite(seconds) or seconds < 0:
        return str(seconds)
    if seconds == 0:
        return "0s"
    if round(seconds * 1000) < 1000:
        return f"{round(seconds * 1000)}ms"
    tenths = round(seconds, 1)
    if tenths < 60:
        # Keep one decimal below a minute ("1.5s"); an exact whole number drops it ("10s").
        return f"{int(tenths)}s" if tenths == int(tenths) else f"{tenths}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{value}{unit}" for value, unit in parts if value)
