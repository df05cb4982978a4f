"""Core profile: what a charger tells its central system while it works."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ocpp.v16 import call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action, DataTransferStatus, RegistrationStatus
from sqlite_utils import Database

from edge.authorization import Authorization, authorize_id_tag
from edge.card_decision import CardPresented, as_charger_decides, decide_card
from edge.clock import normalize_timestamp, parse_timestamp, utc_now_text
from edge.events import (
    CardAction,
    ChargerAccepted,
    ChargerBooted,
    ConnectorStatusChanged,
    EventRecorder,
    MeterReading,
    TransactionStarted,
    TransactionStopped,
)
from edge.metering import active_power_w, energy_register_wh, normalize_sampled_value
from edge.ocpp.library import on
from edge.ocpp.session import SessionBase
from edge.settings import AuthorizationSettings
from edge.store import charger_reports, chargers, id_tags, meter_values, transactions

log = logging.getLogger(__name__)

_REGISTRATION_STATUS = {
    "accepted": RegistrationStatus.accepted,
    "pending": RegistrationStatus.pending,
    "rejected": RegistrationStatus.rejected,
}


def _id_tag_info(authorization: Authorization) -> IdTagInfo:
    return IdTagInfo(
        status=authorization.status,
        parent_id_tag=authorization.parent_id_tag,
        expiry_date=authorization.expiry_date,
    )


class StoredReadings(NamedTuple):
    """What `_store_meter_values` learnt: whether the transaction is this charger's, and
    its latest energy register and power. (A tuple: one is made per MeterValues.)"""

    meter_start_wh: int | None
    energy_register_wh: int | None
    power_w: float | None


def _store_meter_values(
    db: Database,
    charger_id: str,
    connector_id: int,
    transaction_id: int | None,
    meter_value: list[dict[str, Any]],
    received_at: str,
    meter_start_wh: int | None = None,
) -> StoredReadings:
    """Store every sampled value; move the transaction's latest energy reading forward.

    `meter_start_wh`, when the caller already knows the transaction is this charger's,
    saves the look-up.
    """
    if meter_start_wh is None and transaction_id is not None:
        meter_start_wh = transactions.meter_start_of(db, charger_id, transaction_id)
    known = meter_start_wh is not None
    latest_wh, power_w = None, None
    for reading in meter_value:
        taken_at = normalize_timestamp(reading["timestamp"])
        values = [normalize_sampled_value(sampled) for sampled in reading["sampledValue"]]
        meter_values.insert_meter_values(
            db,
            charger_id,
            connector_id,
            transaction_id if known else None,
            None if known else transaction_id,
            taken_at,
            received_at,
            values,
        )
        wh = energy_register_wh(values)
        if known and wh is not None:
            assert transaction_id is not None
            transactions.update_last_meter(db, transaction_id, wh, taken_at)
            latest_wh = wh
        power_w = active_power_w(values) if power_w is None else power_w
    return StoredReadings(meter_start_wh, latest_wh, power_w)


def decide_card_at_charger(
    db: Database,
    outbox: EventRecorder,
    card: CardPresented,
    settings: AuthorizationSettings,
    action: CardAction = "authorize",
) -> Authorization:
    """Decide on a card a charger's own reader read, and record the decision."""
    choose = as_charger_decides(action, card.connector_id)
    authorization = decide_card(db, outbox, card, settings, choose).authorization
    log.info(
        "card %s at %s: %s (%s)",
        card.id_tag,
        card.charger_id,
        authorization.status,
        authorization.reason,
    )
    return authorization


class CoreHandlers(SessionBase):
    @on(Action.boot_notification)
    async def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **details: Any
    ) -> call_result.BootNotification:
        now = utc_now_text()
        details.update(
            charge_point_vendor=charge_point_vendor, charge_point_model=charge_point_model
        )
        charger_id, default = self.id, self.settings.unknown_chargers

        outbox = self.outbox
        booted = ChargerBooted(
            charger_id,
            charge_point_vendor,
            charge_point_model,
            details.get("charge_point_serial_number"),
            details.get("firmware_version"),
        )

        def boot(db: Database) -> str:
            registration = chargers.ensure_charger(db, charger_id, default, now)
            chargers.record_boot(db, charger_id, details, now)
            outbox.record(db, booted, now)
            return registration

        self.registration = await self.store.run(boot)
        accepted = self.registration == "accepted"
        if accepted:
            self.announce(ChargerAccepted(charger_id))
        return call_result.BootNotification(
            current_time=now,
            interval=(
                self.settings.heartbeat_interval if accepted else self.settings.boot_retry_interval
            ),
            status=_REGISTRATION_STATUS[self.registration],
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=utc_now_text())

    @on(Action.status_notification)
    async def on_status_notification(
        self,
        connector_id: int,
        error_code: str,
        status: str,
        info: str | None = None,
        timestamp: str | None = None,
        vendor_id: str | None = None,
        vendor_error_code: str | None = None,
    ) -> call_result.StatusNotification:
        charger_timestamp = normalize_timestamp(timestamp) if timestamp else None
        received_at, charger_id, outbox = utc_now_text(), self.id, self.outbox
        changed = ConnectorStatusChanged(charger_id, connector_id, status, error_code, info)

        def record(db: Database) -> None:
            chargers.record_status(
                db,
                charger_id,
                connector_id,
                status,
                error_code,
                info=info,
                vendor_id=vendor_id,
                vendor_error_code=vendor_error_code,
                charger_timestamp=charger_timestamp,
                received_at=received_at,
            )
            outbox.record(db, changed, received_at)

        await self.store.run(record)
        self.announce(changed)
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> call_result.Authorize:
        card = CardPresented(id_tag, datetime.now(UTC), self.id)
        settings, outbox = self.context.authorization, self.outbox
        authorization = await self.store.run(
            lambda db: decide_card_at_charger(db, outbox, card, settings)
        )
        return call_result.Authorize(id_tag_info=_id_tag_info(authorization))

    @on(Action.start_transaction)
    async def on_start_transaction(
        self,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        timestamp: str,
        reservation_id: int | None = None,
    ) -> call_result.StartTransaction:
        request = transactions.StartRequest(
            charger_id=self.id,
            connector_id=connector_id,
            id_tag=id_tag,
            meter_start_wh=meter_start,
            started_at=normalize_timestamp(timestamp),
            reservation_id=reservation_id,
        )
        received_at = utc_now_text()
        card = CardPresented(id_tag, parse_timestamp(received_at), self.id, connector_id)
        settings, outbox = self.context.authorization, self.outbox

        def start(db: Database) -> tuple[int, TransactionStarted | None, Authorization]:
            authorization = decide_card_at_charger(db, outbox, card, settings, "start")
            # The transaction is recorded whatever the card's status: the charger
            # may already be delivering energy; the status tells it to stop.
            transaction_id, repeat = transactions.start_transaction(
                db, request, authorization.status, received_at
            )
            if repeat:
                return transaction_id, None, authorization
            started = TransactionStarted(
                request.charger_id,
                connector_id,
                transaction_id,
                id_tag,
                authorization.status,
                meter_start,
                request.started_at,
                authorization.parent_id_tag,
            )
            outbox.record(db, started, received_at)
            return transaction_id, started, authorization

        transaction_id, started, authorization = await self.store.run(start)
        self.known_transactions[transaction_id] = meter_start
        if started is not None:
            self.announce(started)
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info=_id_tag_info(authorization)
        )

    @on(Action.meter_values)
    async def on_meter_values(
        self,
        connector_id: int,
        meter_value: list[dict[str, Any]],
        transaction_id: int | None = None,
    ) -> call_result.MeterValues:
        received_at, charger_id = utc_now_text(), self.id
        meter_start = (
            self.known_transactions.get(transaction_id) if transaction_id is not None else None
        )
        outbox = self.outbox

        def store(db: Database) -> tuple[StoredReadings, MeterReading | None]:
            stored = _store_meter_values(
                db, charger_id, connector_id, transaction_id, meter_value, received_at, meter_start
            )
            if stored.meter_start_wh is None or transaction_id is None:
                return stored, None
            register = stored.energy_register_wh
            delivered = None if register is None else register - stored.meter_start_wh
            reading = MeterReading(
                charger_id, connector_id, transaction_id, stored.power_w, delivered, register
            )
            outbox.record(db, reading, received_at)
            return stored, reading

        stored, reading = await self.store.run(store)
        if reading is not None and stored.meter_start_wh is not None:
            self.known_transactions[reading.transaction_id] = stored.meter_start_wh
            self.announce(reading)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list[dict[str, Any]] | None = None,
    ) -> call_result.StopTransaction:
        request = transactions.StopRequest(
            charger_id=self.id,
            transaction_id=transaction_id,
            meter_stop_wh=meter_stop,
            stopped_at=normalize_timestamp(timestamp),
            id_tag=id_tag,
            reason=reason,
        )
        received_at = utc_now_text()

        outbox = self.outbox

        def stop(db: Database) -> tuple[Authorization | None, TransactionStopped | None]:
            outcome = transactions.stop_transaction(db, request, received_at)
            stopped = None
            if outcome == "stopped":
                row = transactions.get_transaction(db, transaction_id)
                assert row is not None
                energy_wh = int(row["meter_stop_wh"]) - int(row["meter_start_wh"])
                stopped = TransactionStopped(
                    request.charger_id,
                    row["connector_id"],
                    transaction_id,
                    row["id_tag"],
                    energy_wh,
                    int(row["meter_stop_wh"]),
                    row["stopped_at"],
                    row["stop_reason"],
                )
                outbox.record(db, stopped, received_at)
            if outcome == "unknown":
                transactions.record_unmatched_stop(db, request, transaction_data, received_at)
            elif outcome == "stopped" and transaction_data:
                row = transactions.get_transaction(db, transaction_id)
                assert row is not None
                _store_meter_values(
                    db,
                    request.charger_id,
                    row["connector_id"],
                    transaction_id,
                    transaction_data,
                    received_at,
                )
            if id_tag is None:
                return None, stopped
            return authorize_id_tag(id_tags.get_id_tag(db, id_tag), datetime.now(UTC)), stopped

        authorization, stopped = await self.store.run(stop)
        if stopped is not None:
            self.announce(stopped)
        return call_result.StopTransaction(
            id_tag_info=_id_tag_info(authorization) if authorization else None
        )

    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None
    ) -> call_result.DataTransfer:
        status, response_data = self.context.data_transfer.answer(vendor_id, message_id, data)
        received_at, charger_id = utc_now_text(), self.id
        await self.store.run(
            lambda db: charger_reports.record_data_transfer(
                db, charger_id, vendor_id, message_id, data, status, response_data, received_at
            )
        )
        return call_result.DataTransfer(status=DataTransferStatus(status), data=response_data)
