"""The test broker itself: a real mosquitto that keeps messages across a clean restart
and loses what it had when killed and restarted empty."""

from __future__ import annotations

import aiomqtt

from tests.mosquitto import Mosquitto


async def test_broker_round_trip_and_restart_empty(broker: Mosquitto) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="t1") as client:
        await client.publish("t/retained", b"kept", qos=1, retain=True)
    broker.kill()
    broker.start(empty=True)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="t2") as client:
        await client.subscribe("t/#", qos=1)
        await client.publish("t/live", b"hello", qos=1)
        message = await anext(client.messages)
        # The retained message died with the broker's state: only the live one arrives.
        assert (str(message.topic), message.payload) == ("t/live", b"hello")
