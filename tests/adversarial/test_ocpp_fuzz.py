"""Property-based fuzzing of the OCPP-J server against one running daemon.

CALL frames for every charger-initiated action are generated from the official OCPP
1.6 JSON schemas the `ocpp` library ships (hypothesis-jsonschema), then broken in
every way a charger can break them: wrong types, huge strings, any Unicode (lone
surrogates and NUL included), deep nesting, bad uniqueIds, wrong message type ids,
text that is not JSON, binary frames, and CALLRESULT/CALLERROR noise.

What must hold for every frame: a CALL-like frame gets exactly one answer (a
CALLRESULT valid against the action's response schema, or a CALLERROR with an OCPP
1.6 error code), a CALLRESULT/CALLERROR gets none, the connection stays open, and a
frame valid against its schema is never an InternalError. Afterwards a well-behaved
charger still boots and its transaction is stored.

`OCPP_FUZZ_EXAMPLES` sets the examples per test (150 by default; e.g. 5000 for a
longer campaign by hand).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft4Validator
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from edge.app import Site, run_edge
from edge.ocpp.session import CHARGER_INITIATED
from edge.simulator import SimulatedCharger, SimulatedChargerConfig
from tests.adversarial.hostile import UNTHROTTLED
from tests.conftest import make_settings

# The daemon runs in a thread beside the generation, and websockets draws its ping
# payloads from the `random` module: Hypothesis takes that for the strategies' doing.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

EXAMPLES = int(os.environ.get("OCPP_FUZZ_EXAMPLES", "150"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# OCPP-J 1.6 section 4.2.3.
OCPP16_ERROR_CODES = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
)
ACTIONS = sorted(CHARGER_INITIATED)


def official_schema(name: str) -> dict[str, Any]:
    text = resources.files("ocpp").joinpath("v16", "schemas", f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


REQUEST_SCHEMAS = {action: official_schema(action) for action in ACTIONS}
RESPONSE_VALIDATORS = {
    action: Draft4Validator(official_schema(f"{action}Response")) for action in ACTIONS
}


# The daemon, once for the module, in a thread of its own ----------------------------


@dataclass
class ThreadedEdge:
    url: str
    database: Path
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread
    failure: list[BaseException] = field(default_factory=list)

    def runs(self) -> bool:
        if self.failure:
            raise AssertionError(f"the daemon stopped: {self.failure[0]!r}")
        return self.thread.is_alive()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedEdge]:
    directory = tmp_path_factory.mktemp("fuzz")
    edge_settings = make_settings(directory, **UNTHROTTLED)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    started: dict[str, Any] = {}
    failure: list[BaseException] = []

    def on_ready(site: Site) -> None:
        started["site"] = site
        ready.set()

    async def main() -> None:
        started["stop"] = asyncio.Event()
        await run_edge(edge_settings, stop=started["stop"], on_ready=on_ready)

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported by the tests through ThreadedEdge.runs
            failure.append(error)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="edge-daemon", daemon=True)
    thread.start()
    assert ready.wait(30), "the daemon did not start"
    if failure:
        raise failure[0]
    site: Site = started["site"]
    prefix = edge_settings.ocpp.path_prefix
    edge = ThreadedEdge(
        f"ws://127.0.0.1:{site.ocpp.port}{prefix}",
        edge_settings.store.path,
        loop,
        started["stop"],
        thread,
        failure,
    )
    yield edge
    loop.call_soon_threadsafe(edge.stop.set)
    thread.join(30)
    assert not failure, failure


# A charger that sends one frame and collects what answers it ------------------------

_sentinels = itertools.count()


class Link:
    """One connection for a whole test; every frame is followed by a Heartbeat whose
    answer marks the end of what the edge said about the frame (a connection's frames
    are handled in order)."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        boot = {"chargePointVendor": "fuzz", "chargePointModel": "fuzz"}
        self.exchange(json.dumps([2, "boot", "BootNotification", boot]))

    def exchange(self, frame: str | bytes) -> list[list[Any]]:
        """Send `frame`; return every frame the edge sent before answering the sentinel."""
        sentinel = f"sentinel-{next(_sentinels)}"
        try:
            self.connection.send(frame)
            self.connection.send(json.dumps([2, sentinel, "Heartbeat", {}]))
            received: list[list[Any]] = []
            while True:
                reply = json.loads(self.connection.recv(timeout=30))
                if reply[1] == sentinel:
                    assert reply[0] == 3 and "currentTime" in reply[2], reply
                    return received
                received.append(reply)
        except ConnectionClosed as closed:
            raise AssertionError(f"the edge closed the connection: {closed}") from closed


@pytest.fixture(scope="module")
def link(daemon: ThreadedEdge) -> Iterator[Link]:
    address = f"{daemon.url}/FUZZ1"
    with connect(address, subprotocols=[Subprotocol("ocpp1.6")], open_timeout=10) as connection:
        yield Link(connection)


def expected_answer(frame: str | bytes) -> tuple[bool, str]:
    """(whether the edge must answer `frame`, the uniqueId its answer carries), by the
    rules of OCPP-J: a CALLRESULT/CALLERROR is never answered, anything else is."""
    if isinstance(frame, bytes):
        return True, "-1"
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return True, "-1"
    if not isinstance(message, list) or not message:
        return True, "-1"
    if message[0] in (3, 4):
        return False, ""
    unique_id = message[1] if len(message) > 1 else None
    usable = isinstance(unique_id, str) and 0 < len(unique_id) <= 36
    return True, unique_id if usable else "-1"


def check_exchange(link: Link, frame: str | bytes, *, schema_valid: bool = False) -> None:
    answers = link.exchange(frame)
    must_answer, unique_id = expected_answer(frame)
    assert len(answers) == (1 if must_answer else 0), (frame, answers)
    if not answers:
        return
    [answer] = answers
    assert answer[1] == unique_id, (frame, answer)
    if answer[0] == 3:
        message = json.loads(frame)
        action = message[2]
        assert action in RESPONSE_VALIDATORS, (frame, answer)
        RESPONSE_VALIDATORS[action].validate(answer[2])
        return
    assert answer[0] == 4 and len(answer) == 5, (frame, answer)
    code, description, details = answer[2:]
    assert code in OCPP16_ERROR_CODES, (frame, answer)
    assert isinstance(description, str) and isinstance(details, dict), (frame, answer)
    if schema_valid:
        assert code != "InternalError", (frame, answer)


# Strategies --------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, categories=None), max_size=50)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Any code point, lone surrogates and NUL included: inside JSON, where json.dumps writes
# a surrogate as its escape, as a hostile charger can.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=200)
# A whole frame's text: a WebSocket text frame is UTF-8, so no lone surrogate (a client
# cannot even send one; invalid UTF-8 bytes end the connection with 1007 by RFC 6455).
WIRE_TEXT = st.text(st.characters(codec="utf-8", categories=None), max_size=200)
HUGE_TEXT = st.integers(10_000, 200_000).map(lambda size: "x" * size)
NESTINGS = st.sampled_from([17, 50, 200, 800, 5_000, 100_000])

valid_calls = st.sampled_from(ACTIONS).flatmap(
    lambda action: from_schema(REQUEST_SCHEMAS[action]).map(lambda payload: (action, payload))
)
unique_ids = st.text(min_size=1, max_size=36).filter(lambda text: not text.startswith("sentinel"))


@st.composite
def broken_payload(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with one field replaced, removed or added."""
    broken = dict(payload)
    how = draw(st.sampled_from(["replace", "remove", "add"]))
    keys = sorted(broken)
    if how == "replace" and keys:
        key = draw(st.sampled_from(keys))
        broken[key] = draw(JSON_VALUES | ANY_TEXT | HUGE_TEXT)
    elif how == "remove" and keys:
        del broken[draw(st.sampled_from(keys))]
    else:
        broken[draw(ANY_TEXT)] = draw(JSON_VALUES)
    return broken


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def malformed_frames(draw: st.DrawFn) -> str | bytes:
    action, payload = draw(valid_calls)
    unique_id = draw(unique_ids)
    kind = draw(
        st.sampled_from(
            [
                "broken payload",
                "any text in payload",
                "deep nesting",
                "bad unique id",
                "message type",
                "action",
                "not json",
                "binary",
                "callresult noise",
                "callerror noise",
                "shape",
            ]
        )
    )
    if kind == "broken payload":
        return json.dumps([2, unique_id, action, draw(broken_payload(payload))])
    if kind == "any text in payload":
        key = draw(st.sampled_from(sorted(payload))) if payload else "x"
        return json.dumps([2, unique_id, action, {**payload, key: draw(ANY_TEXT)}])
    if kind == "deep nesting":
        depth = draw(NESTINGS)
        where = draw(st.sampled_from(["payload", "field", "frame"]))
        if where == "frame":
            return nested(depth)
        inner = nested(depth) if where == "payload" else '{"x": ' + nested(depth) + "}"
        return f"[2, {json.dumps(unique_id)}, {json.dumps(action)}, {inner}]"
    if kind == "bad unique id":
        bad = draw(
            JSON_VALUES.filter(lambda value: not isinstance(value, str))
            | st.just("")
            | st.text(min_size=37, max_size=300)
            | ANY_TEXT
        )
        return json.dumps([2, bad, action, payload])
    if kind == "message type":
        message_type = draw(JSON_VALUES.filter(lambda value: value not in (2, 3, 4)))
        return json.dumps([message_type, unique_id, action, payload])
    if kind == "action":
        return json.dumps([2, unique_id, draw(JSON_VALUES | ANY_TEXT), payload])
    if kind == "not json":
        return draw(WIRE_TEXT.filter(lambda text: not _parses(text)))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "callresult noise":
        return json.dumps([3, draw(JSON_VALUES | unique_ids), draw(JSON_VALUES)])
    if kind == "callerror noise":
        fields = draw(st.lists(JSON_VALUES | ANY_TEXT, max_size=5))
        return json.dumps([4, *fields])
    shape = draw(st.lists(JSON_VALUES, max_size=6))
    return json.dumps([2, *shape])


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


# The properties ----------------------------------------------------------------------


@FUZZ_SETTINGS
@given(call=valid_calls, unique_id=unique_ids)
def test_every_valid_call_gets_one_valid_answer(
    daemon: ThreadedEdge, link: Link, call: tuple[str, dict[str, Any]], unique_id: str
) -> None:
    action, payload = call
    check_exchange(link, json.dumps([2, unique_id, action, payload]), schema_valid=True)
    assert daemon.runs()


@FUZZ_SETTINGS
@given(frame=malformed_frames())
def test_every_malformed_frame_gets_one_error_or_none(
    daemon: ThreadedEdge, link: Link, frame: str | bytes
) -> None:
    check_exchange(link, frame)
    assert daemon.runs()


def test_a_well_behaved_charger_is_served_after_fuzzing(daemon: ThreadedEdge) -> None:
    async def charge() -> int:
        address = f"{daemon.url}/GOOD-AFTER-FUZZ"
        async with connect_async(address, subprotocols=[Subprotocol("ocpp1.6")]) as connection:
            charger = SimulatedCharger("GOOD-AFTER-FUZZ", connection, SimulatedChargerConfig())
            listener = asyncio.create_task(charger.start())
            try:
                assert (await charger.boot()).status == "Accepted"
                transaction_id, _ = await charger.start_transaction(1, "AFTERFUZZ")
            finally:
                listener.cancel()
        return transaction_id

    transaction_id = asyncio.run(charge())
    with sqlite3.connect(daemon.database) as database:
        row = database.execute(
            "SELECT charger_id, id_tag FROM transactions WHERE id = ?", (transaction_id,)
        ).fetchone()
    assert row == ("GOOD-AFTER-FUZZ", "AFTERFUZZ")
    assert daemon.runs()
