"""`Redactor.value`: records are redacted value by value, before they are encoded."""

from __future__ import annotations

import msgspec

from cub.config.schema import RedactionConfig
from cub.records.redact import MASK, Redactor
from cub.records.schemas import ErrorInfo, Event, TaskAttempt, encode

PASSWORD_PATTERN = Redactor.for_config(RedactionConfig(patterns=[r"password=\S+"]))


def test_a_pattern_that_would_eat_json_syntax_leaves_a_record_that_decodes() -> None:
    event = Event(
        at="2026-01-01T00:00:00.000+00:00",
        seq=1,
        kind="note",
        data={'{"password=x"}': ['password=y"]}', 3], "nested": {"k": "password=z\\"}},
    )
    redacted = PASSWORD_PATTERN.value(event)
    decoded = msgspec.json.decode(encode(redacted), type=Event)
    assert decoded.data == {f'{{"{MASK}': [MASK, 3], "nested": {"k": MASK}}
    assert event.data["nested"] == {"k": "password=z\\"}  # the original is left alone


def test_keys_masked_alike_both_stay() -> None:
    redacted = PASSWORD_PATTERN.value({"password=a": 1, "password=b": 2})
    assert redacted == {MASK: 1, f"{MASK} (2)": 2}


def test_kept_fields_are_never_masked() -> None:
    # A user pattern that matches a state name must not make task.json undecodable.
    redact = Redactor.for_config(RedactionConfig(patterns=["stuck"], use_defaults=False))
    attempt = TaskAttempt(
        task_id="T-1",
        title="stuck again",
        attempt=1,
        outcome="stuck",
        started_at="s",
        ended_at="e",
        duration_s=1.0,
        stuck_reason="stuck on stuck",
        error=ErrorInfo(type="E", message="stuck"),
    )
    redacted = redact.value(attempt, keep=frozenset({"outcome"}))
    decoded = msgspec.json.decode(encode(redacted), type=TaskAttempt)
    assert decoded.outcome == "stuck"
    assert (decoded.title, decoded.stuck_reason) == (f"{MASK} again", f"{MASK} on {MASK}")
    assert decoded.error is not None and decoded.error.message == MASK
