"""Redaction of secrets an agent may print, applied before anything reaches disk.

The redactor sees text in two shapes: one line at a time (an agent's output as it streams, each
log line) and whole documents (prompt.md, and each string value of a JSON record, redacted
before the record is encoded: see ``Redactor.value``). Every pattern is safe in both. A secret
that spans lines, a PEM private key, is masked either way: as one block in a document; in a
stream, its BEGIN and END lines by pattern and its base64 body lines by their shape (see
``_KEY_BODY_LINE``).

The shapes are written here rather than taken from a package: the pattern sets on PyPI either
lack providers agents use (Google, Anthropic, Hugging Face), bring dependencies of their own, or
keep their patterns inside detector classes that cannot be joined into the one regex this is
(it runs on every output line, so it must stay one search).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from cub.records.secret_search import ShapeSearch, shape_search

_Value = TypeVar("_Value")


class RedactionSettings(Protocol):
    """The `redaction` section of a config (`cub.config.schema.RedactionConfig`)."""

    @property
    def patterns(self) -> Sequence[str]: ...
    @property
    def use_defaults(self) -> bool: ...


# The guard `_word_start` writes after a prefix.
_WORD_START_GUARD = re.compile(r"\(\?<!\[A-Za-z0-9_\\-\][^()]*\)")


def _word_start(prefix: str) -> str:
    """``prefix`` only where it does not continue a longer word (``task-…`` is not ``sk-…``).

    The guard is a look-behind placed *after* the prefix, so the pattern still starts with a
    literal character (see ``_joined_by_first_char``)."""
    escaped = re.escape(prefix)
    return rf"{escaped}(?<![A-Za-z0-9_\-]{escaped})"


# The rest of a PEM block after its BEGIN line (see the PEM patterns below).
_PEM_REST_OF_BLOCK = r"(?:(?:[^-]|-(?!----))*+-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----)?"

# Every default starts with a literal character (not a class, group, flag or anchor) and has no
# `|` outside a group: that lets them be joined grouped by first character, so the regex is only
# tried where one of those characters occurs, and then only the shapes that start with it.
DEFAULT_SECRET_PATTERNS: tuple[str, ...] = (
    # Google API keys (Gemini, Maps, Firebase): "AIza" and 35 more characters.
    r"AIza[0-9A-Za-z_\-]{35}",
    # Google OAuth: client secrets "GOCSPX-…" and short-lived access tokens "ya29.…".
    r"GOCSPX-[0-9A-Za-z_\-]{20,}",
    r"ya29\.[0-9A-Za-z_\-]{20,}",
    # "sk-" keys. Anthropic: API "sk-ant-api03-…", admin "sk-ant-admin01-…", OAuth
    # "sk-ant-oat01-…". OpenAI: project "sk-proj-…", service account "sk-svcacct-…", admin
    # "sk-admin-…", legacy user keys "sk-" and 48 characters. Also OpenRouter, DeepSeek.
    _word_start("sk-") + r"[A-Za-z0-9_\-]{16,}",
    # GitHub: classic tokens ghp_ (personal), gho_ (OAuth), ghu_/ghs_ (app user/server),
    # ghr_ (refresh), each with 36 base62 characters; fine-grained tokens "github_pat_…".
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    # GitLab: personal/project/group access tokens "glpat-", deploy "gldt-", runner "glrt-",
    # pipeline trigger "glptt-", CI job "glcbt-", feed "glft-", OAuth app secrets "gloas-".
    r"gl(?:pat|dt|rt|ptt|cbt|ft|oas)-[A-Za-z0-9_\-]{20,}",
    # AWS access key ids: long-term "AKIA", temporary (STS) "ASIA", and 16 more characters.
    _word_start("AKIA") + r"[A-Z0-9]{16}",
    _word_start("ASIA") + r"[A-Z0-9]{16}",
    # AWS secret access keys have no prefix (40 base64 characters), so only where labelled:
    # aws_secret_access_key=…, AWS_SECRET_ACCESS_KEY: "…", "SecretAccessKey": "…" (CLI JSON).
    r"a(?i:ws_?secret_?(?:access_?)?key)[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9/+]{40}",
    r"A(?i:ws_?secret_?(?:access_?)?key)[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9/+]{40}",
    r"SecretAccessKey[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9/+]{40}",
    # Slack: bot/user/app/legacy/refresh/rotating tokens "xoxb-", "xoxp-", "xoxa-", "xoxo-",
    # "xoxr-", "xoxs-", "xoxe-"; app-level tokens "xapp-"; webhook and workflow trigger URLs.
    _word_start("xox") + r"[abeposr]-[A-Za-z0-9\-]{10,}",
    _word_start("xapp-") + r"[0-9]+-[A-Za-z0-9\-]{10,}",
    r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{8,}",
    # Stripe: secret "sk_live_"/"sk_test_", restricted "rk_…" and publishable "pk_…" keys;
    # webhook signing secrets "whsec_…".
    r"sk_(?:live|test)_[0-9A-Za-z]{10,}",
    r"rk_(?:live|test)_[0-9A-Za-z]{10,}",
    r"pk_(?:live|test)_[0-9A-Za-z]{10,}",
    r"whsec_[0-9A-Za-z]{24,}",
    # PEM private keys (RSA, EC, DSA, PKCS#8, OpenSSH, encrypted, PGP "… PRIVATE KEY BLOCK"):
    # in a document, the whole block from BEGIN to END; where END is not in the same text (a
    # stream, one line at a time), the BEGIN line, and the END line on its own. The body stops
    # at the next "-----" and never backtracks (possessive), so a text full of BEGIN lines
    # without END costs one pass, not one pass per BEGIN.
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----" + _PEM_REST_OF_BLOCK,
    r"-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----",
    # HTTP bearer credentials (RFC 6750 token characters), "Bearer" in any case.
    r"B(?i:earer)[ \t]+[A-Za-z0-9._~+/\-]{20,}=*",
    r"b(?i:earer)[ \t]+[A-Za-z0-9._~+/\-]{20,}=*",
    # JSON Web Tokens: base64url header and payload (both JSON objects, so both start "eyJ")
    # and signature, dot-separated.
    r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
    # npm access tokens: "npm_" and 36 base62 characters.
    _word_start("npm_") + r"[A-Za-z0-9]{36}",
    # PyPI API tokens: "pypi-" and a base64url macaroon, which starts "AgE".
    r"pypi-AgE[A-Za-z0-9_\-]{50,}",
    # Hugging Face user access tokens: "hf_" and 34 letters.
    _word_start("hf_") + r"[A-Za-z0-9]{30,}",
    # SendGrid API keys: "SG." + 22 characters + "." + 43 characters.
    r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}",
    # Twilio API key SIDs: "SK" and 32 hex digits.
    _word_start("SK") + r"[0-9a-fA-F]{32}",
)

# A private key's base64 body line, as openssl and ssh-keygen print it: exactly 64 characters
# (PEM, RFC 7468) or 70 (OpenSSH), alone on its line. Streamed output reaches the redactor a line
# at a time, so BEGIN and END are never seen with it: the line's shape is all there is. It is
# checked against the whole text, apart from the alternation (whose branches must all start with a
# literal), and only when the defaults are in use.
_KEY_BODY_CHARS = range(64, 129)  # 64 or 70, and room for indentation; cheap to check first
_KEY_BODY_RUN = r"[A-Za-z0-9+/]{64}"
_KEY_BODY_SHAPE = rf"[ \t]*{_KEY_BODY_RUN}(?:[A-Za-z0-9+/]{{6}})?[ \t]*"
_KEY_BODY_LINE = re.compile(_KEY_BODY_SHAPE)


def _is_key_body_line(text: str) -> bool:
    # Both cases of letters are required: a hex digest (sha256 is 64 hex digits) is not a key.
    return (
        len(text) in _KEY_BODY_CHARS
        and _KEY_BODY_LINE.fullmatch(text) is not None
        and text != text.lower()
        and text != text.upper()
    )


MASK = "[REDACTED]"


def _joined_by_first_char(patterns: Sequence[str]) -> str:
    """One alternation of literal-first ``patterns``, grouped by first character (in order).

    Python's regex engine scans for the first characters of an alternation whose branches all
    start with a literal, and tries each branch in turn where one occurs; grouping makes that
    one branch per character instead of one per pattern (about twice as fast on plain text).
    Matching is unchanged: patterns with different first characters never match at the same
    place, and within a group the order is kept."""
    groups: dict[str, list[str]] = {}
    for pattern in patterns:
        first = pattern[0]
        if not (first.isalnum() or first == "-") or pattern[1:2] in ("*", "+", "?", "{"):
            raise ValueError(f"not a literal-first pattern: {pattern!r}")
        groups.setdefault(first, []).append(pattern[1:])
    return "|".join(
        f"{re.escape(first)}(?:{'|'.join(f'(?:{rest})' for rest in rests)})"
        for first, rests in groups.items()
    )


_DEFAULTS_JOINED = _joined_by_first_char(DEFAULT_SECRET_PATTERNS)


def _encodable(text: str) -> str:
    """``text`` as UTF-8 can hold it: bytes that were not UTF-8 (a command line's, which
    Python keeps as lone surrogates) become U+FFFD, so that no record fails to be written."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


_LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def alternative(pattern: str) -> str:
    """``pattern`` as one alternative of the joined regex. Flags written at its start, as
    ``(?i)secret``, would be global flags in the middle of the joined regex (an error): they
    become flags of its own group, ``(?i:secret)``."""
    flags = _LEADING_FLAGS.match(pattern)
    if flags is not None:
        return f"(?{flags.group(1)}:{pattern[flags.end() :]})"
    return f"(?:{pattern})"


# Syntax that can match in a line on its own but not where the line is followed by a newline
# (or preceded by one): the end of the text, look-arounds, matching without backtracking, a flag
# turned off (multi-line). A configured pattern with any of these cannot be searched for in
# many lines at once; its lines are redacted one by one.
_LINE_BOUND_SYNTAX = re.compile(r"\\[AZz]|\(\?[=!<>]|\(\?[a-zA-Z]*-|[*+?}]\+")
_UNSAFE_ACROSS_LINES = re.compile("")


def _line_scan(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One search for ``patterns`` over many lines: multi-line, so ``^`` and ``$`` are a line's
    start and end. Over whole lines it finds a match wherever any single line has one (it may
    find more, or a match spanning lines: only a superset of the lines is needed)."""
    if not patterns:
        return None
    if any(_LINE_BOUND_SYNTAX.search(pattern) for pattern in patterns):
        return _UNSAFE_ACROSS_LINES
    return re.compile("|".join(alternative(p) for p in patterns), re.MULTILINE)


def _add_lines(found: set[int], text: str | bytes, spans: Iterable[tuple[int, int]]) -> None:
    """Add to ``found`` the index of every line of ``text`` that a span (in order) touches."""
    newline = "\n" if isinstance(text, str) else b"\n"
    pos = line = 0
    for start, end in spans:
        line += text.count(newline, pos, start)  # type: ignore[arg-type]
        last = line + text.count(newline, start, max(start, end - 1))  # type: ignore[arg-type]
        found.update(range(line, last + 1))
        pos, line = start, line


@functools.cache
def _defaults_scan() -> ShapeSearch | None:
    """The default patterns as one search over many lines (`cub.records.secret_search`: hundreds
    of MB/s to several GB/s whatever the text, where Python's engine slows to tens of MB/s on
    text full of the patterns' first letters). It finds a superset of the lines the defaults
    match: each pattern without its word-start guard (a look-behind, which RE2 lacks), the PEM
    BEGIN line without the rest of its block, and a key body line by its shape. RE2 folds case
    as Python does for the case-insensitive parts (tests/records/test_redact_lines.py checks
    every code point). None without RE2."""
    shapes = [
        _WORD_START_GUARD.sub("", pattern).replace(_PEM_REST_OF_BLOCK, "")
        for pattern in DEFAULT_SECRET_PATTERNS
    ]
    return shape_search(shapes, _KEY_BODY_RUN, _KEY_BODY_SHAPE)


def redact_each_line(
    redact: Callable[[str], str], text: str, only: Iterable[int] | None = None
) -> str:
    """``text`` (whole lines, each ending in a newline) with each line (or those at the indexes
    ``only``) redacted on its own by ``redact``, its "\r" before the newline kept apart."""
    lines = text.split("\n")
    for index in range(len(lines) - 1) if only is None else only:
        line = lines[index]
        if line.endswith("\r"):
            lines[index] = redact(line[:-1]) + "\r"
        else:
            lines[index] = redact(line)
    return "\n".join(lines)


class Redactor:
    """Replaces every match of ``patterns`` with ``MASK``; with the defaults (listed first), also
    a text that is a private key's base64 body line."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> None:
        patterns = tuple(patterns)
        # The defaults arrive first when used (see for_config): they are joined precompiled, and
        # any configured patterns appended as given.
        n_defaults = len(DEFAULT_SECRET_PATTERNS)
        self._key_body_lines = patterns[:n_defaults] == DEFAULT_SECRET_PATTERNS
        if self._key_body_lines:
            parts = [_DEFAULTS_JOINED, *(alternative(p) for p in patterns[n_defaults:])]
        else:
            parts = [alternative(p) for p in patterns]
        self._regex = re.compile("|".join(parts)) if parts else None
        # The configured patterns, searched over many lines at once (the defaults have a faster
        # search of their own, `_defaults_scan`).
        configured = patterns[n_defaults:] if self._key_body_lines else patterns
        self._line_scan = _line_scan(configured)

    @classmethod
    def for_config(cls, redaction: RedactionSettings) -> Redactor:
        """The project's `redaction` settings: its patterns, and the defaults unless turned off."""
        defaults = DEFAULT_SECRET_PATTERNS if redaction.use_defaults else ()
        return cls([*defaults, *redaction.patterns])

    def __call__(self, text: str) -> str:
        if self._key_body_lines and _is_key_body_line(text):
            return MASK
        if self._regex is None:
            return text
        return self._regex.sub(MASK, text)

    def lines(self, data: bytes) -> str:
        """``data`` (whole lines, each ending in a newline) decoded and redacted exactly as each
        line would be on its own by ``self(line)``, its line ending ("\n" or "\r\n") kept
        and never part of a match.

        An agent's output is redacted this way, a read at a time: the lines that may hold a
        secret are found in one pass over the whole text (see ``_lines_to_check``), and only
        those are redacted one by one; the rest is never split."""
        text = data.decode("utf-8", "replace")
        if self._regex is None and not self._key_body_lines:
            return text
        to_check = self._lines_to_check(data, text)
        if to_check is not None and not to_check:
            return text
        return redact_each_line(self, text, to_check)

    def _lines_to_check(self, data: bytes, text: str) -> set[int] | None:
        """The indexes of the lines of ``text`` (``data`` decoded) that may hold a match: a
        superset of those where ``self`` would change anything; None when every line must be
        checked (a configured pattern that cannot be searched for across lines)."""
        if self._line_scan is _UNSAFE_ACROSS_LINES:
            return None
        found: set[int] = set()
        if self._key_body_lines:
            scan = _defaults_scan()
            if scan is None:
                return None
            _add_lines(found, data, scan.spans(data))
        if self._line_scan is not None:
            # Searched in lines without their "\r", as each is redacted; the line count is the same.
            plain = text.replace("\r\n", "\n") if "\r" in text else text
            _add_lines(found, plain, (m.span() for m in self._line_scan.finditer(plain)))
        return found

    def value(self, value: _Value, keep: frozenset[str] = frozenset()) -> _Value:
        """``value`` with every string in it redacted, however nested in lists, dicts (their
        keys too) and msgspec Structs; a Struct's fields named in ``keep`` are left as they are.

        Records are redacted this way, before they are encoded, never as encoded JSON: a
        pattern that matched across a quote or a bracket would leave a file that no longer
        parses (``password=\\S+`` ate the rest of the line, closing quote and all)."""
        return self._value(value, keep)  # type: ignore[no-any-return]

    def _value(self, value: Any, keep: frozenset[str]) -> Any:
        if isinstance(value, str):
            return self(_encodable(value))
        if isinstance(value, msgspec.Struct):
            changes = {
                name: self._value(getattr(value, name), keep)
                for name in value.__struct_fields__
                if name not in keep
            }
            return msgspec.structs.replace(value, **changes)
        if isinstance(value, dict):
            return self._mapping(value, keep)
        if isinstance(value, list | tuple):
            return [self._value(item, keep) for item in value]
        return value

    def _mapping(self, mapping: dict[Any, Any], keep: frozenset[str]) -> dict[Any, Any]:
        redacted: dict[Any, Any] = {}
        for key, item in mapping.items():
            new_key = self(_encodable(key)) if isinstance(key, str) else key
            # Two keys masked alike (two secrets used as names) both stay, numbered.
            base, n = new_key, 1
            while new_key in redacted:
                n += 1
                new_key = f"{base} ({n})"
            redacted[new_key] = self._value(item, keep)
        return redacted
