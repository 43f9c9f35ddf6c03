"""Which pieces of an agent's output its parser may pass over without looking.

Most of what an agent prints in bulk (a test suite's output, a build log) holds nothing its
parser takes anything from: no event, no usage report, no signal. A parser that can say what it
looks for (``looks_for``: patterns every line it takes something from holds) gets a sieve: the
reader thread asks Hyperscan, on the raw bytes and at several GB/s, whether a piece may hold
one of them, and the pieces that certainly do not are never parsed. CPython's own substring
search runs at about 3 GB/s; a parser making a few of them over each piece would spend more
than the rest of cub on a gigabyte of output.

The patterns are in Hyperscan's syntax, on bytes. A match in the decoded text is a match in the
bytes: UTF-8 encodes ASCII only as itself and invalid bytes decode to U+FFFD, and redaction
only ever puts its markers in, so a sieve that finds nothing was right to. Without Hyperscan
there is no sieve, and every piece is parsed.
"""

from __future__ import annotations

import functools

from cub.records.secret_search import AnyMatch, load_hyperscan


def literal(text: str) -> bytes:
    """``text`` as a Hyperscan pattern matching exactly its UTF-8 bytes."""
    return b"".join(
        bytes([byte]) if chr(byte).isalnum() and byte < 0x80 else b"\\x%02x" % byte
        for byte in text.encode()
    )


@functools.cache
def sieve_for(patterns: tuple[bytes, ...]) -> AnyMatch | None:
    """The sieve for ``patterns`` (built once per process): `AnyMatch.found_in` says whether a
    piece may hold one of them. None without Hyperscan."""
    hyperscan = load_hyperscan()
    if hyperscan is None:
        return None
    try:
        return AnyMatch(hyperscan, patterns)
    except hyperscan.error:  # e.g. a CPU it cannot run on: every piece is parsed
        return None
