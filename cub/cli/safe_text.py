"""Text from a task, an issue or an agent, made safe to print on a terminal.

A task title is anyone's text: `\\033]0;…\\a` would retitle the user's window, `\\033]52;…` write
their clipboard, a right-to-left override reorder what they read. Every control character
(C0, DEL, C1) and every bidirectional formatting character is shown as a visible escape
(``\\x1b``, ``\\u202e``) instead of reaching the terminal. Only an agent's colours survive in
its streamed output (plain SGR sequences: ``ESC [ digits ; m``), as they do in a terminal.
"""

from __future__ import annotations

import re

_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {code: _escape(code) for code in (*range(0x20), 0x7F, *range(0x80, 0xA0), *_BIDI)}
_KEEP_NEWLINES = {code: shown for code, shown in _TABLE.items() if code != 0x0A}
# Any character _TABLE escapes. Finding none is much cheaper than a translate() that changes
# nothing, which is what text with a non-ASCII character (an em dash, an accent) would cost.
_UNSAFE = re.compile("[" + "".join(re.escape(chr(code)) for code in _TABLE) + "]")
_SGR = re.compile(r"(\x1b\[[0-9;]*m)")


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control and bidi character shown as an escape; ``keep_newlines``
    for text printed over several lines (a task's description)."""
    if (text.isascii() and text.isprintable()) or _UNSAFE.search(text) is None:
        return text  # the common case, without building a copy
    return text.translate(_KEEP_NEWLINES if keep_newlines else _TABLE)


def agent_line_safe(line: str) -> str:
    """An agent's output line: its colour sequences kept, every other control escaped."""
    if line.isascii() and line.isprintable():
        return line
    return "".join(
        part if index % 2 else terminal_safe(part) for index, part in enumerate(_SGR.split(line))
    )
