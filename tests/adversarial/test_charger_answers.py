"""A charger's answers to the edge's own calls can never stop the daemon: a CALLERROR
code OCPP 1.6 does not define, a malformed CALLRESULT or CALLERROR, thousands of
results nobody asked for, a connection dropped mid-call. Each becomes the command's
recorded outcome, and every other charger goes on being served."""

from __future__ import annotations

import json

import pytest

from edge.simulator import make_csr
from tests.adversarial.hostile import (
    UNTHROTTLED,
    HostileCharger,
    daemon_runs,
    well_behaved_charger_is_served,
)
from tests.conftest import RunningEdge, StartEdge
from tests.waiting import eventually


def command_rows(edge: RunningEdge, action: str) -> list[tuple[str, str | None, str | None]]:
    return [
        (row["outcome"], row["error_code"], row["error_description"])
        for row in edge.query(
            "SELECT outcome, error_code, error_description FROM commands WHERE action = ? "
            "ORDER BY id",
            (action,),
        )
    ]


def finished(edge: RunningEdge, action: str) -> bool:
    return any(outcome != "sent" for outcome, _, _ in command_rows(edge, action))


async def test_unknown_callerror_code_to_the_local_list_sync_is_recorded(
    start_edge: StartEdge,
) -> None:
    edge = await start_edge(push_local_list=True)
    async with HostileCharger(edge.url, "EVIL1") as charger:
        await charger.boot()
        await charger.answer_local_list_keys()
        call = await charger.next_call("GetLocalListVersion")
        # OCPP 2.0.1's code, which some 1.6 firmwares send.
        await charger.send_only(json.dumps([4, call[1], "RpcFrameworkError", "no", {}]))
        await eventually(lambda: finished(edge, "GetLocalListVersion"), within=10)
        assert daemon_runs(edge)
    assert command_rows(edge, "GetLocalListVersion") == [("callerror", "RpcFrameworkError", "no")]
    await well_behaved_charger_is_served(edge)
    assert daemon_runs(edge)


async def test_unknown_callerror_code_to_certificate_signed_is_recorded(
    edge: RunningEdge,
) -> None:
    async with HostileCharger(edge.url, "EVIL2") as charger:
        await charger.boot()
        answer = await charger.ok("SignCertificate", {"csr": make_csr("EVIL2")})
        assert answer == {"status": "Accepted"}
        call = await charger.next_call("CertificateSigned")
        await charger.send_only(json.dumps([4, call[1], "SomethingElse", "x" * 3000, {}]))
        await eventually(
            lambda: edge.query("SELECT status FROM certificate_requests")[0][0] != "accepted",
            within=10,
        )
        assert daemon_runs(edge)
    (outcome, code, description) = command_rows(edge, "CertificateSigned")[0]
    assert (outcome, code) == ("callerror", "SomethingElse")
    # The charger's text is kept, bounded.
    assert description is not None and description.startswith("xxx") and len(description) < 1100
    assert edge.query("SELECT status FROM certificate_requests")[0][0] == "undelivered"
    await well_behaved_charger_is_served(edge)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ('[3, "{id}", "not an object"]', "FormationViolation"),
        ('[3, "{id}", {{"listVersion": "seven"}}]', "TypeConstraintViolation"),
        ('[3, "{id}", {{}}]', "ProtocolError"),
        ('[4, "{id}", "GenericError"]', "FormationViolation"),
        ('[4, "{id}", 17, "code is a number", {{}}]', "FormationViolation"),
        ('[3, "{id}", {{"listVersion": 1, "x": "\\ud800"}}]', "FormationViolation"),
    ],
)
async def test_malformed_answer_is_recorded_at_once(
    start_edge: StartEdge, answer: str, code: str
) -> None:
    edge = await start_edge(push_local_list=True)
    async with HostileCharger(edge.url, "EVIL3") as charger:
        await charger.boot()
        await charger.answer_local_list_keys()
        call = await charger.next_call("GetLocalListVersion")
        await charger.send_only(answer.format(id=call[1]))
        # Long before the 30 s a command waits for an answer.
        await eventually(lambda: finished(edge, "GetLocalListVersion"), within=15)
        assert daemon_runs(edge)
    [(outcome, error_code, description)] = command_rows(edge, "GetLocalListVersion")
    assert (outcome, error_code) == ("callerror", code), description
    assert description and description.startswith("the charger's answer")
    await well_behaved_charger_is_served(edge)


async def test_thousands_of_unsolicited_results_before_boot(start_edge: StartEdge) -> None:
    edge = await start_edge(push_local_list=True, **UNTHROTTLED)
    flood = 5000
    async with HostileCharger(edge.url, "EVIL4") as charger:
        for number in range(flood):
            await charger.send_only(json.dumps([3, f"nobody-asked-{number}", {}]))
        await charger.boot()
        await charger.answer_local_list_keys()
        call = await charger.next_call("GetLocalListVersion")
        await charger.send_only(json.dumps([3, call[1], {"listVersion": 5}]))
        await eventually(lambda: finished(edge, "GetLocalListVersion"), within=15)
        assert daemon_runs(edge)
        session = edge.server.sessions["EVIL4"]
        assert session.unsolicited_results == flood
    assert command_rows(edge, "GetLocalListVersion")[0][0] == "answered"
    await well_behaved_charger_is_served(edge)


async def test_connection_dropped_instead_of_an_answer(start_edge: StartEdge) -> None:
    edge = await start_edge(push_local_list=True)
    async with HostileCharger(edge.url, "EVIL5") as charger:
        await charger.boot()
        await charger.answer_local_list_keys()
        await charger.next_call("GetLocalListVersion")
    await eventually(lambda: finished(edge, "GetLocalListVersion"), within=15)
    [(outcome, _, description)] = command_rows(edge, "GetLocalListVersion")
    assert outcome == "offline" and description and "closed" in description
    assert daemon_runs(edge)
    await well_behaved_charger_is_served(edge)
