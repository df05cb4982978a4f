"""What the edge does to an event before the outbox takes it (contract/storable.py):
text, numbers, times and sizes made into what every store holds, each change noted."""

from __future__ import annotations

from contract import protocol as wire
from contract.storable import (
    MAX_TEXT_CHARS,
    TRUNCATION_MARK,
    safe_text,
    storable_event,
    unstorable_reason,
)

AT = "2026-03-01T10:00:00.000Z"


def test_a_plain_event_is_taken_as_it_is() -> None:
    status = wire.ConnectorStatus(
        charger_id="CP1", connector_id=1, status="Available", error_code="NoError"
    )
    cleaned, text = storable_event(status, AT)
    assert cleaned is status and text == status.model_dump_json(exclude_none=True)
    assert cleaned.cleaned is None


def test_nul_and_lone_surrogates_are_replaced_and_noted() -> None:
    boot = wire.ChargerBoot(charger_id="CP1", vendor="Ac\x00me", model="M\ud800")
    cleaned, text = storable_event(boot, AT)
    assert isinstance(cleaned, wire.ChargerBoot)
    assert (cleaned.vendor, cleaned.model) == ("Ac\ufffdme", "M\ufffd")
    assert cleaned.cleaned == [
        "vendor: NUL or lone surrogate replaced by U+FFFD",
        "model: NUL or lone surrogate replaced by U+FFFD",
    ]
    assert "\\u0000" not in text and unstorable_reason(cleaned.model_dump()) is None


def test_long_text_is_cut_with_a_marker() -> None:
    status = wire.ConnectorStatus(
        charger_id="CP1", connector_id=1, status="Faulted", error_code="X", info="i" * 5000
    )
    cleaned, _ = storable_event(status, AT)
    assert isinstance(cleaned, wire.ConnectorStatus) and cleaned.info is not None
    assert len(cleaned.info) == MAX_TEXT_CHARS and cleaned.info.endswith(TRUNCATION_MARK)
    assert cleaned.cleaned == [f"info: 5000 characters cut to {MAX_TEXT_CHARS}"]


def test_integers_beyond_64_bits_are_clamped_and_noted() -> None:
    meter = wire.TransactionMeter(
        charger_id="CP1", transaction_id=1, meter_wh=2**70, energy_wh=-(2**64)
    )
    cleaned, _ = storable_event(meter, AT)
    assert isinstance(cleaned, wire.TransactionMeter)
    assert (cleaned.meter_wh, cleaned.energy_wh) == (2**63 - 1, -(2**63))
    assert cleaned.cleaned is not None and len(cleaned.cleaned) == 2
    assert cleaned.cleaned[0].startswith("meter_wh: 1180591620717411303424 is beyond 64 bits")


def test_a_time_that_is_not_one_becomes_the_events_own() -> None:
    started = wire.TransactionStarted(
        charger_id="CP1",
        connector_id=1,
        transaction_id=1,
        id_tag="A",
        id_tag_status="Accepted",
        meter_start_wh=0,
        started_at="0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    )
    cleaned, _ = storable_event(started, AT)
    assert isinstance(cleaned, wire.TransactionStarted) and cleaned.started_at == AT
    assert cleaned.cleaned is not None and "is not a time" in cleaned.cleaned[0]


def test_an_answer_too_large_for_an_event_is_left_out_and_noted() -> None:
    answer = {"configurationKey": [{"key": f"K{n}", "value": "v" * 900} for n in range(200)]}
    result = wire.CommandResult(command_id="c1", status="done", response=answer)
    cleaned, text = storable_event(result, AT)
    assert isinstance(cleaned, wire.CommandResult) and cleaned.response is None
    assert len(text.encode()) <= wire.MAX_EVENT_BYTES
    assert cleaned.cleaned is not None
    assert "more than an event holds (65536): left out" in cleaned.cleaned[-1]


def test_deep_answers_are_cut_and_keys_cleaned() -> None:
    deep: dict[str, object] = {}
    level = deep
    for _ in range(60):
        level["x"] = {}
        level = level["x"]  # type: ignore[assignment]
    result = wire.CommandResult(command_id="c1", status="done", response={"deep": deep, "k\x00": 1})
    cleaned, _ = storable_event(result, AT)
    assert isinstance(cleaned, wire.CommandResult) and cleaned.response is not None
    assert "k\ufffd" in cleaned.response
    assert unstorable_reason(cleaned.model_dump()) is None
    assert unstorable_reason(result.model_dump()) is not None


def test_what_the_cloud_refuses_is_named() -> None:
    assert unstorable_reason({"a": float("inf")}) == "a: inf is not finite"
    assert unstorable_reason({"n": 2**64}) == "n: 18446744073709551616 is beyond 64 bits"
    assert unstorable_reason({"n": 2**200}) == "n: a number of 201 bits is beyond 64 bits"
    assert unstorable_reason({"started_at": "noon"}) == (
        "started_at: 'noon' is not an ISO 8601 time"
    )
    assert unstorable_reason({"list": ["ok", "b\x00"]}) == (
        "list[1]: a NUL or lone surrogate in text"
    )
    assert safe_text("a\x00\ud800b") == "a\ufffd\ufffdb"
