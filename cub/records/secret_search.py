"""Which lines of an agent's output may hold one of the default secret shapes: the one search
every byte the agent prints goes through, so it runs at the speed of the output itself.

Two engines, each doing what it is fastest at:

* Hyperscan (SIMD, literal-driven: several GB/s) decides, part by part, that most of the output
  holds nothing at all: none of the shapes, and no run of 64 key characters, without which no
  line can be a private key's body line.
* RE2 (a DFA: one pass at about 700 MB/s whatever the text) finds the lines in the parts that
  do hold something, exactly as before: Hyperscan only ever lets a part through untouched, so
  what is found is what RE2 alone finds.

Without Hyperscan (no wheel for the platform, a CPU without SSSE3) every part goes to RE2.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

logger = logging.getLogger("cub.records")

# Output read in large pieces is searched in parts this large (or larger), each on a core of its
# own: both engines let go of the interpreter while they search.
SCAN_PART_BYTES = 256 << 10
SCAN_THREADS = max(1, min(4, (os.cpu_count() or 1) - 1))

# The characters other than its two cases that Python's case-insensitive matching takes for an
# ASCII letter: the long s and the Kelvin sign (tests/records/test_secret_search.py checks every
# code point). Hyperscan folds ASCII only; in its shapes these are written out, as UTF-8 bytes.
FOLDED_BEYOND_ASCII = {"s": "\u017f", "k": "\u212a"}
_CASELESS_GROUP = re.compile(r"\(\?i:")


def _group_end(pattern: str, start: int) -> int:
    """The index just past the group whose body begins at ``start``."""
    depth, pos = 1, start
    while depth:
        if pattern[pos] == "\\":
            pos += 1
        else:
            depth += {"(": 1, ")": -1}.get(pattern[pos], 0)
        pos += 1
    return pos


def _bytes_alternative(letter: str, other: str) -> str:
    escaped = "".join(f"\\x{byte:02x}" for byte in other.encode())
    return f"(?:{letter}|{escaped})"


def gate_shape(shape: str) -> str:
    """``shape`` as Hyperscan must be given it to match wherever Python's engine does (on text
    decoded from UTF-8): in its case-insensitive parts, each letter that Python also takes a
    non-ASCII character for is followed by that character's bytes as an alternative."""
    out, pos = [], 0
    for group in _CASELESS_GROUP.finditer(shape):
        if group.start() < pos:  # a group nested in one already written out
            continue
        end = _group_end(shape, group.end())
        out.append(shape[pos : group.end()])
        body = shape[group.end() : end]
        escaped = False
        for char in body:
            other = None if escaped else FOLDED_BEYOND_ASCII.get(char.lower())
            out.append(char if other is None else _bytes_alternative(char, other))
            escaped = char == "\\" and not escaped
        pos = end
    out.append(shape[pos:])
    return "".join(out)


class AnyMatch:
    """Hyperscan's answer to "does this data hold a match of any of these patterns?", the scan
    stopped at the first one. Shared by threads: each scans with scratch space of its own."""

    def __init__(self, hyperscan: Any, expressions: Sequence[bytes]) -> None:
        self._hs = hyperscan
        self._database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._database.compile(
            expressions=list(expressions),
            ids=list(range(len(expressions))),
            flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(expressions),
        )
        self._local = threading.local()

    def found_in(self, data: bytes | bytearray | memoryview) -> bool:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._hs.Scratch(self._database)
        found = False

        def stop(*_: object) -> bool:
            nonlocal found
            found = True
            return True

        # A callback that says stop ends the scan with this error; what it saw is recorded.
        with contextlib.suppress(self._hs.ScanTerminated):
            self._database.scan(data, match_event_handler=stop, scratch=scratch)
        return found


class _Gate:
    """Hyperscan's answer to "may this part hold anything?", at several GB/s on most text.

    Two questions, the cheaper first, each stopped at its first hit: is there a run of 64 key
    characters (``key_run``), without which no line is a key body line; is there a match of a
    shape (see `gate_shape`)? A part where either is found is left to RE2. The key body line
    itself is not looked for here: Hyperscan takes longer over it than RE2 over everything."""

    def __init__(self, hyperscan: Any, shapes: Sequence[str], key_run: str) -> None:
        self._runs = AnyMatch(hyperscan, [key_run.encode()])
        self._shapes = AnyMatch(hyperscan, [gate_shape(shape).encode() for shape in shapes])

    def holds_nothing(self, part: memoryview) -> bool:
        """Whether ``part`` (whole lines) certainly holds no match of the shapes, no key line."""
        return not self._runs.found_in(part) and not self._shapes.found_in(part)


class ShapeSearch:
    """The spans of the shapes' matches in whole lines of output (see the module docstring)."""

    def __init__(self, exact: Any, gate: _Gate | None) -> None:
        self._exact = exact  # RE2: every shape, and the key line, as one regex
        self._gate = gate

    @property
    def gated(self) -> bool:
        return self._gate is not None

    def spans(self, data: bytes) -> Iterator[tuple[int, int]]:
        """The spans of matches in ``data`` (whole lines), in order; a large ``data`` is searched
        in parts cut after a newline (every match lies within one line), at once."""
        parts = min(SCAN_THREADS + 1, len(data) // SCAN_PART_BYTES)
        if parts < 2:
            yield from self._search(data, 0, len(data))
            return
        cuts = [0]
        for i in range(1, parts):
            cut = data.find(b"\n", max(cuts[-1], i * len(data) // parts)) + 1
            if cut > 0:
                cuts.append(cut)
        cuts.append(len(data))
        first, *rest = itertools.pairwise(cuts)
        later = [_scan_pool().submit(self._search, data, start, end) for start, end in rest]
        yield from self._search(data, *first)
        for future in later:
            yield from future.result()

    def _search(self, data: bytes, start: int, end: int) -> list[tuple[int, int]]:
        if self._gate is not None and self._gate.holds_nothing(memoryview(data)[start:end]):
            return []
        return [m.span() for m in self._exact.finditer(data, start, end)]


@functools.cache
def _scan_pool() -> Any:
    from concurrent.futures import ThreadPoolExecutor  # 5 ms to import: output in bulk only

    return ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="cub-redact")


def shape_search(shapes: Sequence[str], key_run: str, key_line: str) -> ShapeSearch | None:
    """The search for ``shapes`` (literal-first, no look-arounds) and for lines of the shape
    ``key_line`` (which holds ``key_run``); None without RE2."""
    try:
        import re2  # about 7 ms to import: loaded only once an agent's output is read
    except (ImportError, OSError) as exc:  # e.g. an image without libstdc++: slower, still right
        logger.warning("google-re2 cannot be loaded (%s); redacting output line by line", exc)
        return None
    line = rf"(?m:^{key_line}\r?$)"
    exact = re2.compile("|".join(f"(?:{shape})" for shape in [*shapes, line]))
    return ShapeSearch(exact, _hyperscan_gate(shapes, key_run))


def _hyperscan_gate(shapes: Sequence[str], key_run: str) -> _Gate | None:
    hyperscan = load_hyperscan()
    if hyperscan is None:
        return None
    try:
        return _Gate(hyperscan, shapes, key_run)
    except hyperscan.error as exc:  # e.g. ArchitectureError: a CPU it cannot run on
        logger.warning("hyperscan cannot be used (%s); searching output with RE2 alone", exc)
        return None


@functools.cache
def load_hyperscan() -> Any:
    """The hyperscan module, or None where it has no wheel (the searches fall back on slower
    engines, with the same results)."""
    try:
        import hyperscan  # about 5 ms to import: loaded only once an agent's output is read
    except (ImportError, OSError):
        return None
    return hyperscan
