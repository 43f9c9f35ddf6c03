"""What every adapter's stream parser shares.

Every agent CLI here prints one JSON object per line. Its parser must survive anything on that
stream: plain-text lines (warnings on the merged stderr), truncated lines (the supervisor cuts
lines over 1 MiB), JSON of the wrong shape. ``decode_event`` and the ``count``/``number``/
``mapping``/``string`` accessors turn all of that into "no event" or a zero, never an exception.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

_decode_any = msgspec.json.Decoder().decode
# A line that may hold a JSON event: "{" after nothing but whitespace. Searched for after a
# newline (a literal first character is found by a fast scan, "^" would be tried everywhere).
_EVENT_LINE = re.compile(r"\n[^\S\n]*\{[^\n]*")


def event_lines(text: str) -> Iterator[tuple[str, str | None]]:
    """``text`` (whole lines, each ending in "\n") in order, as (plain text, the event line
    after it) pairs: the plain text is whole lines with no "{" at their start ("" if none), the
    event line one such line without its newline (None after the last plain text)."""
    pos = 0
    for match in _EVENT_LINE.finditer("\n" + text):
        start, end = match.start(), match.end() - 1  # in text: the "\n" before is not there
        yield text[pos:start], text[start:end]
        pos = end + 1
    if pos < len(text):
        yield text[pos:], None


def decode_event(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None for anything else (text, bad or truncated JSON)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = _decode_any(text)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


# The largest figure one usage report may carry; larger ones are taken at this value. Far
# beyond any real agent invocation (a million-token context re-read on each of a thousand
# calls is 10^9 tokens; a trillion tokens would cost millions of dollars), and small enough
# that totals stay exact whole numbers, readable in a listing and in any JSON reader (under
# 2^53). A report this large is a broken or hostile agent: the run's budgets stop it.
MAX_TOKENS = 10**12
MAX_COST_USD = 1e9


def token_count(value: Any) -> int | None:
    """A reported token count: a whole number from 0, at most ``MAX_TOKENS``; None when the
    value is not one (not a number, negative, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return None
    return min(int(value), MAX_TOKENS)


def count(value: Any) -> int:
    """A token count (see ``token_count``), or 0 when the value is not one: a negative count
    never lowers a total, so it can never hide usage from a budget."""
    return token_count(value) or 0


def number(value: Any) -> float | None:
    """A finite, non-negative number (a cost), at most ``MAX_COST_USD``; or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        return MAX_COST_USD
    if not math.isfinite(value) or value < 0:
        return None
    return min(value, MAX_COST_USD)


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def positional(text: str) -> str:
    """``text`` made safe to pass as a command-line value: a leading ``-`` would be read as an
    option by the agent's argument parser, so such text gets a leading newline."""
    return "\n" + text if text.startswith("-") else text


def estimate_tokens(chars: int) -> int:
    """The usual rough estimate: four characters to a token, rounded up."""
    return (chars + 3) // 4
