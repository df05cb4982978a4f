"""Pure decisions: card authorization and meter normalisation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.authorization import IdTagRecord, authorize_id_tag
from edge.metering import energy_register_wh, normalize_sampled_value
from edge.tap_outcome import TapResult, moves_forward

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("record", "elsewhere", "status"),
    [
        (None, False, "Invalid"),
        (IdTagRecord("A", "Accepted"), False, "Accepted"),
        (IdTagRecord("A", "Blocked"), False, "Blocked"),
        (IdTagRecord("A", "Expired"), False, "Expired"),
        (IdTagRecord("A", "Invalid"), False, "Invalid"),
        (IdTagRecord("A", "Accepted", "2026-05-31T23:59:59.000Z"), False, "Expired"),
        (IdTagRecord("A", "Accepted", "2026-06-02T00:00:00Z"), False, "Accepted"),
        (IdTagRecord("A", "Accepted"), True, "ConcurrentTx"),
        (IdTagRecord("A", "Blocked"), True, "Blocked"),
    ],
)
def test_authorize_id_tag(record: IdTagRecord | None, elsewhere: bool, status: str) -> None:
    assert authorize_id_tag(record, NOW, charging_elsewhere=elsewhere).status == status


def test_authorization_carries_parent_and_expiry() -> None:
    decision = authorize_id_tag(IdTagRecord("A", "Accepted", "2027-01-01T00:00:00Z", "FLAT12"), NOW)
    assert (decision.parent_id_tag, decision.expiry_date) == ("FLAT12", "2027-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("sampled", "normalized", "wh"),
    [
        ({"value": "12.345", "unit": "kWh"}, 12345.0, 12345),
        ({"value": "987"}, 987.0, 987),
        ({"value": "7.4", "unit": "kW", "measurand": "Power.Active.Import"}, 7400.0, None),
        ({"value": "98.6", "unit": "Fahrenheit", "measurand": "Temperature"}, 37.0, None),
        ({"value": "300.15", "unit": "K", "measurand": "Temperature"}, 27.0, None),
        (
            {"value": "1.5", "unit": "kvarh", "measurand": "Energy.Reactive.Import.Register"},
            1500.0,
            None,
        ),
        ({"value": "80", "unit": "Percent", "measurand": "SoC"}, 80.0, None),
        ({"value": "a1b2", "format": "SignedData"}, None, None),
        ({"value": "n/a"}, None, None),
    ],
)
def test_normalize_sampled_value(
    sampled: dict[str, str], normalized: float | None, wh: int | None
) -> None:
    value = normalize_sampled_value(sampled)
    assert (
        value.normalized == pytest.approx(normalized)
        if normalized is not None
        else value.normalized is None
    )
    assert value.wh == wh
    assert value.value == sampled["value"]


def test_sampled_value_defaults_are_ocpp16s() -> None:
    value = normalize_sampled_value({"value": "1"})
    assert (value.measurand, value.unit, value.context, value.format) == (
        "Energy.Active.Import.Register",
        "Wh",
        "Sample.Periodic",
        "Raw",
    )


def test_energy_register_is_the_unphased_import_register() -> None:
    values = [
        normalize_sampled_value({"value": "100", "phase": "L1"}),
        normalize_sampled_value({"value": "7", "unit": "kW", "measurand": "Power.Active.Import"}),
        normalize_sampled_value({"value": "0.3", "unit": "kWh"}),
    ]
    assert energy_register_wh(values) == 300


def test_presence_online_stale_offline() -> None:
    from edge.presence import presence
    from edge.settings import Settings

    settings = Settings(ocpp={"heartbeat_interval": 60, "heartbeat_grace": 30})  # type: ignore[arg-type]
    now = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert (
        presence({"connected": 1, "last_seen_at": "2026-06-01T11:59:00.000Z"}, settings, now)
        == "online"
    )
    assert (
        presence({"connected": 1, "last_seen_at": "2026-06-01T11:58:29.000Z"}, settings, now)
        == "stale"
    )
    assert (
        presence({"connected": 0, "last_seen_at": "2026-06-01T11:59:59.000Z"}, settings, now)
        == "offline"
    )


def test_a_tap_outcome_only_moves_forward() -> None:
    assert moves_forward(None, TapResult.START_ACCEPTED)
    assert moves_forward("start accepted", TapResult.STARTED)
    assert moves_forward("stop accepted", TapResult.FAILED)
    # The charger's StartTransaction came before its answer to RemoteStartTransaction.
    assert not moves_forward("started", TapResult.START_ACCEPTED)
    assert not moves_forward("started", TapResult.NOT_STARTED_IN_TIME)
    assert not moves_forward("failed: charger CP1 did not answer", TapResult.STARTED)
