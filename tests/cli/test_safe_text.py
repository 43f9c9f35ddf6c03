"""Text shown on a terminal: every control and bidi character escaped, whatever else the text
holds; text with none of them is shown as it is."""

from __future__ import annotations

from cub.cli.safe_text import terminal_safe

CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def test_text_with_nothing_to_escape_is_shown_as_it_is() -> None:
    for text in ("plain", "Tâche numéro 2 — prête", "日本語のタスク", "emoji 🐻 ok", ""):
        assert terminal_safe(text) == text


def test_every_control_and_bidi_character_is_escaped_beside_other_non_ascii_text() -> None:
    for code in CONTROLS + BIDI:
        shown = terminal_safe(f"été — {chr(code)} fin")
        escaped = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        assert shown == f"été — {escaped} fin", hex(code)


def test_newlines_are_kept_only_when_asked() -> None:
    assert terminal_safe("a — b\nc\x1b") == "a — b\\x0ac\\x1b"
    assert terminal_safe("a — b\nc\x1b", keep_newlines=True) == "a — b\nc\\x1b"
