"""The peer the edge is measured beside: a central system as a first try with the `ocpp`
library would write it, following the library's README: one `ChargePoint` per
connection, a handler per action, each message stored at once with sqlite-utils (one
commit per message, the file's default journal). Runs in its own process.

    python bench/first_try_csms.py PORT DATABASE
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from datetime import UTC, datetime
from typing import Any

import sqlite_utils
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

transaction_ids = itertools.count(1)


def now() -> str:
    return datetime.now(UTC).isoformat()


class FirstTryChargePoint(ChargePoint):  # type: ignore[misc]  # the library is untyped
    db: sqlite_utils.Database

    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> Any:
        self.db.table("boots").insert(
            {"charger": self.id, "vendor": charge_point_vendor, "model": charge_point_model}
        )
        return call_result.BootNotification(
            current_time=now(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    def on_heartbeat(self) -> Any:
        self.db.table("heartbeats").insert({"charger": self.id, "at": now()})
        return call_result.Heartbeat(current_time=now())

    @on(Action.status_notification)
    def on_status(self, connector_id: int, error_code: str, status: str, **_: Any) -> Any:
        self.db.table("statuses").insert(
            {"charger": self.id, "connector": connector_id, "status": status, "error": error_code}
        )
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> Any:
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start(self, connector_id: int, id_tag: str, meter_start: int, **_: Any) -> Any:
        transaction_id = next(transaction_ids)
        self.db.table("transactions").insert(
            {"id": transaction_id, "charger": self.id, "id_tag": id_tag, "start": meter_start},
            pk="id",
        )
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.meter_values)
    def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **_: Any
    ) -> Any:
        rows = [
            {"charger": self.id, "at": value["timestamp"], **sampled}
            for value in meter_value
            for sampled in value["sampled_value"]
        ]
        self.db.table("meter_values").insert_all(rows, alter=True)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    def on_stop(self, transaction_id: int, meter_stop: int, **_: Any) -> Any:
        self.db.table("transactions").update(transaction_id, {"stop": meter_stop})
        return call_result.StopTransaction()


async def serve_forever(port: int, database: str) -> None:
    db = sqlite_utils.Database(database)

    async def on_connect(connection: ServerConnection) -> None:
        assert connection.request is not None
        charger = FirstTryChargePoint(connection.request.path.rsplit("/", 1)[-1], connection)
        charger.db = db
        await charger.start()

    async with serve(
        on_connect, "127.0.0.1", port, subprotocols=[Subprotocol("ocpp1.6")]
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve_forever(int(sys.argv[1]), sys.argv[2]))
