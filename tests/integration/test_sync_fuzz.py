"""Property-based fuzzing of the aggregator over MQTT: payloads Hypothesis makes (random
bytes, JSON of every shape, event batches built from the wire models with hostile text,
numbers and sizes, edge ids that are not the topic's, topics with no edge id) published to
a real mosquitto while the aggregator runs. After each, the aggregator must still run
and must have refused, quarantined or stored it with a counted reason; afterwards a real
edge's events are stored exactly once, in order.

`OCPP_FUZZ_EXAMPLES` sets how many payloads (default 150, for CI); a longer campaign:
`OCPP_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/integration/test_sync_fuzz.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
import types
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from cloud.app import CloudSite, run_cloud
from cloud.settings import CloudSettings
from cloud.store.schema import edges, events, rejections
from contract import protocol as wire
from edge.app import Site, run_edge
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.conftest import free_port, make_settings
from tests.mosquitto import Mosquitto

EXAMPLES = int(os.environ.get("OCPP_FUZZ_EXAMPLES", "150"))
GOOD_EDGE = "good-edge"
PROBE = "probe-edge"
T = TypeVar("T")


@dataclass
class FuzzedCloud:
    """The aggregator and a publisher on an event loop of their own, in a thread, so
    that Hypothesis (which is synchronous) can drive them example by example."""

    loop: asyncio.AbstractEventLoop
    broker: Mosquitto
    site: CloudSite
    publisher: aiomqtt.Client
    directory: Path
    cloud_task: asyncio.Task[None]

    def run(self, work: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        async def wrapped() -> T:
            return await work()

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish `payload`, then a probe's status: with one worker, the aggregator
        handles messages in the order they came, so once the probe's status is stored
        the payload has been dealt with."""
        before = self.probe_status_at()
        probe = wire.EdgeStatus(state="offline").model_dump_json(exclude_none=True)

        async def send() -> None:
            await self.publisher.publish(topic, payload, qos=1)
            await self.publisher.publish(wire.Topics(PROBE).status, probe, qos=1)

        self.run(send)
        deadline = time.monotonic() + 20
        while self.probe_status_at() == before:
            assert time.monotonic() < deadline, f"no decision on a message to {topic!r}"
            time.sleep(0.005)

    def probe_status_at(self) -> Any:
        with self.site.engine.connect() as connection:
            return connection.execute(
                select(edges.c.status_at).where(edges.c.id == PROBE)
            ).scalar_one_or_none()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedCloud]:
    directory = tmp_path_factory.mktemp("fuzz")
    broker = Mosquitto(directory / "broker")
    broker.start()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stop = asyncio.Event()
    settings = CloudSettings(
        store={"url": f"sqlite:///{directory / 'cloud.db'}"},
        mqtt={"broker_host": "127.0.0.1", "broker_port": broker.port, "keepalive": 5},
        api={"port": 0},
        desired={"resend_interval": 1.0},
        firmware={"directory": directory / "firmware", "signing_key": str(directory / "k")},
        # One worker: messages are handled in the order they came (see publish).
        limits={"inbound_workers": 1},
    )

    async def start() -> tuple[CloudSite, aiomqtt.Client, asyncio.Task[None]]:
        ready: asyncio.Future[CloudSite] = loop.create_future()
        task = asyncio.create_task(run_cloud(settings, stop=stop, on_ready=ready.set_result))
        site = await ready
        while not site.aggregator.connected:  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0.01)
        publisher = aiomqtt.Client("127.0.0.1", broker.port, identifier="fuzzer")
        await publisher.__aenter__()
        return site, publisher, task

    site, publisher, task = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    fuzzed = FuzzedCloud(loop, broker, site, publisher, directory, task)
    yield fuzzed

    async def finish() -> None:
        await publisher.__aexit__(None, None, None)
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run_coroutine_threadsafe(finish(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    broker.stop()


# -- strategies ---------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e", "'; DROP TABLE edges;--"]),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Lo", "So"]), max_size=20),
    st.integers(1, 70_000).map(lambda size: "x" * size),
)
HOSTILE_INT = st.one_of(
    st.integers(-5, 5),
    st.integers(),
    st.sampled_from([2**31, 2**31 - 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**70, 10**30]),
)
JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), HOSTILE_INT, st.floats(allow_nan=False), HOSTILE_TEXT
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_TEXT, inner, max_size=4),
    max_leaves=12,
)


def value_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A hostile value for a field of a wire model: mostly of its type, sometimes not."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Literal:
        return st.sampled_from(arguments) | HOSTILE_TEXT
    if origin in (types.UnionType, typing.Union):
        return st.one_of(*(value_for(argument) for argument in arguments))
    if annotation is type(None):
        return st.none()
    if annotation is str:
        return HOSTILE_TEXT
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return HOSTILE_INT
    if annotation is float:
        return st.floats() | HOSTILE_INT
    if origin is list:
        return st.lists(value_for(arguments[0]) if arguments else JSON_VALUE, max_size=4)
    if origin is dict:
        return st.dictionaries(HOSTILE_TEXT, JSON_VALUE, max_size=5)
    return JSON_VALUE


def data_of(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """An event's data generated from its wire model's fields, with hostile values; now
    and then a field left out, or one the model does not have."""
    fields = {
        name: value_for(field.annotation)
        for name, field in model.model_fields.items()
        if name != "kind"
    }
    kind = model.model_fields["kind"].default
    required = {name: fields[name] for name, f in model.model_fields.items() if f.is_required()}
    optional = {name: strategy for name, strategy in fields.items() if name not in required}
    return st.fixed_dictionaries(
        {"kind": st.just(kind) | HOSTILE_TEXT, **required}, optional=optional
    ) | st.fixed_dictionaries({"kind": st.just(kind), "unknown": JSON_VALUE})


# EventData is Annotated[A | B | ..., discriminator]: its members are the event models.
EVENT_MODELS: list[type[BaseModel]] = list(typing.get_args(typing.get_args(wire.EventData)[0]))
TIMES = (
    st.sampled_from(
        [
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.123+02:00",
            # Times whose UTC falls outside the years any datetime holds.
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
        ]
    )
    | HOSTILE_TEXT
)


@st.composite
def event_batches(draw: st.DrawFn, edge_id: str) -> bytes:
    count = draw(st.integers(1, 8))
    if draw(st.booleans()):
        seqs = list(range(1, count + 1))  # what a new edge sends
    else:
        seqs = draw(st.lists(HOSTILE_INT, min_size=count, max_size=count))
    datas = [draw(st.sampled_from(EVENT_MODELS).flatmap(data_of)) for _ in range(count)]
    batch: dict[str, Any] = {
        "edge_id": draw(st.just(edge_id) | st.sampled_from([GOOD_EDGE, "other", "+", ""])),
        "events": [
            {"seq": seq, "at": draw(TIMES), "data": data}
            for seq, data in zip(seqs, datas, strict=True)
        ],
    }
    if draw(st.booleans()):
        batch["epoch"] = draw(st.sampled_from(["0" * 32, "f" * 32]) | HOSTILE_TEXT)
    # Serialised as the standard library would: lone surrogates escaped, big ints whole.
    return json.dumps(batch).encode()


@dataclass(frozen=True)
class Example:
    edge_id: str
    topic: str
    payload: bytes


_numbers = itertools.count(1)


@st.composite
def examples(draw: st.DrawFn) -> Example:
    edge_id = f"fuzz-{next(_numbers)}"
    topics = wire.Topics(edge_id)
    what = draw(
        st.sampled_from(["bytes", "json", "batch", "batch", "batch", "status", "request", "topic"])
    )
    if what == "topic":
        # An edge level that is no edge id (mosquitto takes any UTF-8 there but wildcards,
        # control characters and non-characters).
        level = draw(
            st.text(
                alphabet=st.characters(
                    exclude_characters="/+#\x00", exclude_categories=["Cs", "Cc", "Cn", "Co"]
                ),
                min_size=1,
                max_size=80,
            ).filter(lambda text: not wire.is_edge_id(text))
        )
        payload = draw(st.binary(max_size=200))
        return Example(level, f"{wire.DEFAULT_TOPIC_PREFIX}/{level}/events", payload)
    topic = draw(st.sampled_from([topics.events, topics.status, topics.firmware_request]))
    if what == "bytes":
        payload = draw(st.binary(max_size=2000))
    elif what == "json":
        payload = json.dumps(draw(JSON_VALUE)).encode()
    elif what == "batch":
        topic, payload = topics.events, draw(event_batches(edge_id))
    elif what == "status":
        topic = topics.status
        payload = json.dumps(draw(data_of_status())).encode()
    else:
        topic = topics.firmware_request
        payload = json.dumps(draw(data_of_model(wire.FirmwareRequest))).encode()
    return Example(edge_id, topic, payload)


def data_of_model(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {name: value_for(field.annotation) for name, field in model.model_fields.items()}
    )


def data_of_status() -> st.SearchStrategy[dict[str, Any]]:
    return data_of_model(wire.EdgeStatus)


# -- the properties ------------------------------------------------------------------


def counted_for(fuzzed: FuzzedCloud, edge_id: str) -> bool:
    """Whether the store shows a decision on a payload from `edge_id`: a refusal counted,
    or the edge's row (its events stored or quarantined, its status taken)."""
    with fuzzed.site.engine.connect() as connection:
        refused = connection.execute(
            select(func.count()).select_from(rejections).where(rejections.c.source == edge_id)
        ).scalar_one()
        known = connection.execute(
            select(func.count()).select_from(edges).where(edges.c.id == edge_id)
        ).scalar_one()
    return bool(refused or known)


def test_hostile_payloads_never_stop_the_aggregator_and_each_is_counted(
    fuzzed: FuzzedCloud,
) -> None:
    aggregator = fuzzed.site.aggregator

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not os.environ.get("OCPP_FUZZ_EXAMPLES"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(example=examples())
    def publish_one(example: Example) -> None:
        fuzzed.publish(example.topic, example.payload)
        assert not fuzzed.cloud_task.done(), "the aggregator stopped"
        assert aggregator.connected, "the aggregator's MQTT session dropped"
        if wire.is_edge_id(example.edge_id):
            assert counted_for(fuzzed, example.edge_id), example
        else:
            on_no_edge.append(example.topic)

    on_no_edge: list[str] = []
    refused_topics = aggregator.refused_topics

    publish_one()
    # Afterwards a real edge's events are stored exactly once, in order.
    statuses = fuzzed.run(lambda: good_edge_statuses(fuzzed), timeout=120)
    with fuzzed.site.engine.connect() as connection:
        stored = connection.execute(
            select(events.c.seq, events.c.kind, events.c.data)
            .where(events.c.edge_id == GOOD_EDGE)
            .order_by(events.c.seq)
        ).all()
    assert [row.seq for row in stored] == list(range(1, len(stored) + 1))
    stored_statuses = [row.data["status"] for row in stored if row.kind == "charger.status"]
    assert stored_statuses == statuses
    # No message ever made a handler raise or the session start again; topics with no
    # edge id were counted as refused.
    assert aggregator.sessions == 1 and aggregator.inbound.failed == 0
    assert aggregator.refused_topics - refused_topics == len(on_no_edge)


async def good_edge_statuses(fuzzed: FuzzedCloud) -> list[str]:
    """Run the edge daemon with a charger that reports a sequence of statuses; return
    them once the cloud acknowledged everything."""
    directory = fuzzed.directory / "edge"
    sections = {
        "sync": {
            "edge_id": GOOD_EDGE,
            "broker_host": "127.0.0.1",
            "broker_port": fuzzed.broker.port,
            "keepalive": 5,
            "ack_timeout": 2.0,
        }
    }
    settings = make_settings(directory, sections=sections, port=free_port())
    stop = asyncio.Event()
    ready: asyncio.Future[Site] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_edge(settings, stop=stop, on_ready=ready.set_result))
    statuses = ["Available", "Preparing", "Charging", "SuspendedEV", "Finishing"] * 4
    try:
        site = await ready
        url = f"ws://127.0.0.1:{site.ocpp.port}{settings.ocpp.path_prefix}/CP1"
        async with connect(url, subprotocols=[Subprotocol("ocpp1.6")]) as connection:
            charger = SimulatedCharger("CP1", connection, SimulatedChargerConfig(connectors=1))
            listener = asyncio.create_task(charger.start())
            await charger.boot()
            for status in statuses:
                await charger.send_status(1, status)
            listener.cancel()
        async with asyncio.timeout(60):
            while await site.ocpp.context.store.run(  # noqa: ASYNC110 - rows, no event
                lambda db: db.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            ):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    return statuses
