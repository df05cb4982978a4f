"""What every store can hold, in one place for both ends of the sync: text without NUL
(PostgreSQL refuses it) or lone surrogates (not UTF-8), integers within 64 bits, times
that are times, and events of bounded size.

The edge cleans each event to that before it is appended to the outbox
(`storable_event`), so it never keeps an event the cloud cannot take; the aggregator
checks each event it receives (`unstorable_reason`) and quarantines one that is not.
The rules are documented in docs/sync-protocol.md, "What the edge cleans".
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from pydantic_core import PydanticSerializationError

from contract.protocol import EVENT_DATA, INT64_MAX, INT64_MIN, MAX_EVENT_BYTES, EventData

# A text longer than this is cut, and ends with TRUNCATION_MARK (inside the limit).
MAX_TEXT_CHARS = 1_000
TRUNCATION_MARK = "…[cut]"
# What stands in for a NUL or a lone surrogate.
REPLACEMENT = "\ufffd"
# Nesting deeper than this (in a charger's answer) is cut.
MAX_DEPTH = 32
MAX_NOTES = 16
# Event fields that hold times: checked like the cloud reads them.
TIME_FIELDS = ("started_at", "stopped_at")

_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")
# 19 digits in a row may be an integer beyond 64 bits: worth a closer look.
_LONG_NUMBER = re.compile(r"\d{19}")


def storable_event(event: EventData, at: str) -> tuple[EventData, str]:
    """`event` as the cloud can store it, and its JSON; `at` is the event's own time,
    which stands in for a time field that is not a time. Text is cleaned and bounded,
    integers clamped to 64 bits, a too-large free-form part (a charger's whole answer
    to a command) left out; each change is named in the event's `cleaned` notes."""
    try:
        text = event.model_dump_json(exclude_none=True)
    except PydanticSerializationError:  # a lone surrogate cannot be UTF-8
        text = None
    if text is not None and _plainly_storable(text) and _times_readable(event) and _flat(event):
        return event, text
    notes: list[str] = list(event.cleaned or [])
    values = event.model_dump(mode="python", exclude_none=True, exclude={"cleaned"})
    cleaned = {key: _clean(value, key, notes, 0) for key, value in values.items()}
    for field in TIME_FIELDS:
        if isinstance(cleaned.get(field), str) and not _is_time(cleaned[field]):
            _note(notes, f"{field}: {cleaned[field][:40]!r} is not a time: the event's time")
            cleaned[field] = at
    result = _with_notes(event, cleaned, notes)
    text = result.model_dump_json(exclude_none=True)
    for field, value in list(cleaned.items()):
        if len(text.encode()) <= MAX_EVENT_BYTES:
            break
        # Only a free-form part (dict or list) grows without bound; text is cut above.
        optional = not type(event).model_fields[field].is_required()
        if isinstance(value, dict | list) and optional:
            size = len(text.encode())
            notes.append(
                f"{field}: {size} bytes of JSON, more than an event holds "
                f"({MAX_EVENT_BYTES}): left out; the edge's command log keeps it whole"
            )
            del cleaned[field]
            result = _with_notes(event, cleaned, notes)
            text = result.model_dump_json(exclude_none=True)
    if len(text.encode()) > MAX_EVENT_BYTES:  # cannot happen with bounded text fields
        raise ValueError(f"a {event.kind} event of {len(text)} bytes cannot be made smaller")
    return result, text


def unstorable_reason(value: Any, path: str = "", depth: int = 0) -> str | None:
    """Why `value` (an event's data, as Python values) cannot be stored anywhere, or
    None: a NUL or lone surrogate in text, an integer beyond 64 bits, a number that is
    not finite, a time field that is not a time, nesting deeper than the edge keeps."""
    if depth > MAX_DEPTH + 1:
        return f"{path}: nested deeper than {MAX_DEPTH}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'number'}: {value} is not finite"
    if isinstance(value, str):
        if _UNSAFE_TEXT.search(value):
            return f"{path or 'text'}: a NUL or lone surrogate in text"
        if path in TIME_FIELDS and not _is_time(value):
            return f"{path}: {value[:40]!r} is not an ISO 8601 time"
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return f"{path or 'number'}: {_short_number(value)} is beyond 64 bits"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            problem = unstorable_reason(str(key), f"{where} (a key)", depth)
            problem = problem or unstorable_reason(item, where, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = unstorable_reason(item, f"{path}[{index}]", depth + 1)
            if problem:
                return problem
    return None


def safe_text(text: str) -> str:
    """`text` with every NUL and lone surrogate replaced: any store holds it (for what
    quotes a sender's words: a reason, a sample, a field name)."""
    return _UNSAFE_TEXT.sub(REPLACEMENT, text)


def _plainly_storable(text: str) -> bool:
    """True for the common event: short (no text can be over the limit), no NUL, no
    number long enough to be beyond 64 bits."""
    return (
        len(text) <= MAX_TEXT_CHARS and "\\u0000" not in text and _LONG_NUMBER.search(text) is None
    )


def _flat(event: EventData) -> bool:
    """No nested part (a charger's answer): those are walked for their depth."""
    return not any(isinstance(value, dict | list) and value for value in event.__dict__.values())


def _times_readable(event: EventData) -> bool:
    for field in TIME_FIELDS:
        value = getattr(event, field, None)
        if isinstance(value, str) and not _is_time(value):
            return False
    return True


def _with_notes(event: EventData, cleaned: dict[str, Any], notes: list[str]) -> EventData:
    if len(notes) > MAX_NOTES:
        notes[MAX_NOTES - 1 :] = [f"and {len(notes) - MAX_NOTES + 1} more"]
    values = cleaned | ({"cleaned": notes} if notes else {})
    return EVENT_DATA.validate_python(values)


def _clean(value: Any, path: str, notes: list[str], depth: int) -> Any:
    if isinstance(value, str):
        return _clean_text(value, path, notes)
    if isinstance(value, float) and not math.isfinite(value):
        _note(notes, f"{path}: {value} is not a number any store holds: left out")
        return None
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        clamped = max(INT64_MIN, min(INT64_MAX, value))
        _note(notes, f"{path}: {_short_number(value)} is beyond 64 bits: {clamped}")
        return clamped
    if depth >= MAX_DEPTH and isinstance(value, dict | list):
        _note(notes, f"{path}: nested deeper than {MAX_DEPTH}: cut")
        return TRUNCATION_MARK
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            clean_key = _clean_text(str(key), f"{path} (a key)", notes)
            result[clean_key] = _clean(item, f"{path}.{clean_key[:40]}", notes, depth + 1)
        return result
    if isinstance(value, list | tuple):
        return [
            _clean(item, f"{path}[{index}]", notes, depth + 1) for index, item in enumerate(value)
        ]
    return str(value)


def _clean_text(text: str, path: str, notes: list[str]) -> str:
    if _UNSAFE_TEXT.search(text):
        text = _UNSAFE_TEXT.sub(REPLACEMENT, text)
        _note(notes, f"{path}: NUL or lone surrogate replaced by U+FFFD")
    if len(text) > MAX_TEXT_CHARS:
        _note(notes, f"{path}: {len(text)} characters cut to {MAX_TEXT_CHARS}")
        text = text[: MAX_TEXT_CHARS - len(TRUNCATION_MARK)] + TRUNCATION_MARK
    return text


def _note(notes: list[str], text: str) -> None:
    # A note names a field: its path holds cleaned keys, but bound it all the same.
    notes.append(_UNSAFE_TEXT.sub(REPLACEMENT, text)[:300])


def _is_time(text: str) -> bool:
    """As the aggregator reads an event's time (cloud/store/times.py)."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return True


def _short_number(value: int) -> str:
    # str() of a number of thousands of digits is slow (and refused beyond 4300).
    return str(value) if value.bit_length() <= 96 else f"a number of {value.bit_length()} bits"
