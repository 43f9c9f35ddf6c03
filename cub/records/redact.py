"""Redaction of secrets an agent may print, applied before anything reaches disk."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cub.config.schema import RedactionConfig

# Common credential shapes: OpenAI/Anthropic-style keys, GitHub tokens, AWS access key ids,
# Slack tokens, and bearer headers.
DEFAULT_SECRET_PATTERNS: tuple[str, ...] = (
    r"sk-[A-Za-z0-9_\-]{16,}",
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"AKIA[0-9A-Z]{16}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",
    r"[Bb]earer\s+[A-Za-z0-9._\-]{20,}",
)

MASK = "[REDACTED]"


class Redactor:
    def __init__(self, patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> None:
        patterns = tuple(patterns)
        self._regex = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    @classmethod
    def for_config(cls, redaction: RedactionConfig) -> Redactor:
        """The project's `redaction` settings: its patterns, and the defaults unless turned off."""
        defaults = DEFAULT_SECRET_PATTERNS if redaction.use_defaults else ()
        return cls([*defaults, *redaction.patterns])

    def __call__(self, text: str) -> str:
        if self._regex is None:
            return text
        return self._regex.sub(MASK, text)

    def bytes(self, data: bytes) -> bytes:
        return self(data.decode("utf-8", "replace")).encode()
