"""What one charger's connection may use is bounded ([ocpp.limits]): the size of a
frame, the frames it sends per second, the sampled values in one MeterValues, and
the answers nobody asked for (dropped, counted, never kept): memory stays flat."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from edge.settings import ChargerLimitsSettings
from tests.adversarial.hostile import HostileCharger, daemon_runs, well_behaved_charger_is_served
from tests.conftest import RunningEdge, StartEdge
from tests.mosquitto import free_port
from tests.ocpp_client import RawCharger, now_iso
from tests.processes import Daemon, wait_for_port

LIMITS = ChargerLimitsSettings()


def meter_values(count: int) -> dict[str, object]:
    """A MeterValues payload with `count` sampled values in two readings."""
    sampled = [
        {"value": str(number), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
        for number in range(count)
    ]
    readings = (sampled[: count // 2], sampled[count // 2 :])
    return {
        "connectorId": 1,
        "meterValue": [{"timestamp": now_iso(), "sampledValue": part} for part in readings],
    }


async def test_frame_beyond_the_limit_closes_with_1009(edge: RunningEdge) -> None:
    async with HostileCharger(edge.url, "BIG1") as charger:
        assert charger.connection is not None
        too_big = json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * 300_000}])
        assert len(too_big) > LIMITS.max_frame_bytes
        await charger.send_only(too_big)
        try:
            async with asyncio.timeout(10):
                await charger.connection.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009
        else:
            raise AssertionError("a frame beyond max_frame_bytes was taken")
    assert edge.query("SELECT count(*) FROM data_transfers")[0][0] == 0
    # Just below the limit is a legal frame, answered.
    async with HostileCharger(edge.url, "BIG2") as charger:
        fits = {"vendorId": "x", "data": "y" * (LIMITS.max_frame_bytes - 100)}
        assert (await charger.ok("DataTransfer", fits))["status"]
    assert daemon_runs(edge)


async def test_sampled_values_beyond_the_limit_are_refused_whole(edge: RunningEdge) -> None:
    async with RawCharger(edge.url, "METER1") as charger:
        reply = await charger.call("MeterValues", meter_values(LIMITS.max_sampled_values + 1))
        assert reply[0] == 4 and reply[2] == "OccurenceConstraintViolation", reply
        assert str(LIMITS.max_sampled_values) in reply[3]
        assert edge.query("SELECT count(*) FROM meter_values")[0][0] == 0
        # At the limit: all stored.
        assert await charger.ok("MeterValues", meter_values(LIMITS.max_sampled_values)) == {}
        stop = {
            "transactionId": 1,
            "meterStop": 5,
            "timestamp": now_iso(),
            "transactionData": meter_values(LIMITS.max_sampled_values + 1)["meterValue"],
        }
        reply = await charger.call("StopTransaction", stop)
        assert reply[2] == "OccurenceConstraintViolation", reply
    assert edge.query("SELECT count(*) FROM meter_values")[0][0] == LIMITS.max_sampled_values
    assert edge.query("SELECT count(*) FROM unmatched_stops")[0][0] == 0
    await well_behaved_charger_is_served(edge)


async def test_a_fast_charger_is_read_more_slowly_and_loses_nothing(
    start_edge: StartEdge,
) -> None:
    rate, burst, frames = 40.0, 5, 65
    edge = await start_edge(limits={"frames_per_second": rate, "frame_burst": burst})
    async with HostileCharger(edge.url, "FAST1") as charger:
        started = time.monotonic()
        for number in range(frames):
            await charger.send_only(json.dumps([2, f"h{number}", "Heartbeat", {}]))
        answers = [await charger.receive() for _ in range(frames)]
        elapsed = time.monotonic() - started
        assert [answer[:2] for answer in answers] == [[3, f"h{n}"] for n in range(frames)]
        session = edge.server.sessions["FAST1"]
        assert session.throttled_frames >= frames - burst - 1
    # Beyond the burst, no faster than the rate (a slow machine only takes longer).
    assert elapsed >= (frames - burst - 1) / rate
    assert daemon_runs(edge)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def unsolicited_result(number: int) -> str:
    # ~200 KiB of JSON that parses into a dict of 13,000 entries: several times its size
    # in Python objects, as a real flood would be.
    payload = {f"k{key:05d}": key for key in range(13_000)}
    return json.dumps([3, f"nobody-{number}", payload])


async def test_unsolicited_results_keep_memory_flat(tmp_path: Path) -> None:
    """28 MiB of answers to nothing against the real daemon process: its RSS grows by
    far less than the flood (it grew by ~690 MB when they were queued)."""
    port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
        "push_local_list = false\n"
        f'[store]\npath = "{tmp_path / "edge.db"}"\n[api]\nport = 0\n[files]\nport = 0\n'
        f'directory = "{tmp_path / "files"}"\n'
    )
    daemon = Daemon("edge", config, tmp_path / "edge.log")
    daemon.start()
    try:
        await asyncio.to_thread(wait_for_port, port)
        assert daemon.process is not None
        url = f"ws://127.0.0.1:{port}/ocpp"
        async with RawCharger(url, "WARM") as charger:
            await charger.boot()
        before = rss_mb(daemon.process.pid)
        frame = unsolicited_result(0)
        assert len(frame) < LIMITS.max_frame_bytes
        frames = 28 * 1024 * 1024 // len(frame) + 1
        async with connect(
            f"{url}/FLOOD", subprotocols=[Subprotocol("ocpp1.6")], max_size=None
        ) as link:
            for number in range(frames):
                await link.send(unsolicited_result(number))
            # Frames are handled in order: once this is answered, the flood is through.
            await link.send(json.dumps([2, "last", "Heartbeat", {}]))
            async with asyncio.timeout(120):
                answer = json.loads(await link.recv())
            assert answer[:2] == [3, "last"]
        after = rss_mb(daemon.process.pid)
        assert daemon.process.poll() is None, daemon.log_tail()
        async with RawCharger(url, "AFTER") as charger:
            assert (await charger.boot())["status"] == "Accepted"
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_tail()
    print(f"RSS {before:.0f} MB before, {after:.0f} MB after {frames} frames (28 MiB)")
    assert after - before < 60, (before, after)


async def test_reconnecting_does_not_refill_a_chargers_frame_budget(
    start_edge: StartEdge,
) -> None:
    rate, burst = 5.0, 10
    edge = await start_edge(limits={"frames_per_second": rate, "frame_burst": burst})
    async with HostileCharger(edge.url, "CYCLE1") as charger:
        for number in range(burst):
            assert (await charger.ok("Heartbeat", {}))["currentTime"], number
        assert edge.server.sessions["CYCLE1"].throttled_frames == 0
    # The same id at once on a new connection: its budget is the one it left with.
    async with HostileCharger(edge.url, "CYCLE1") as charger:
        for number in range(3):
            assert (await charger.ok("Heartbeat", {}))["currentTime"], number
        assert edge.server.sessions["CYCLE1"].throttled_frames >= 2
    assert daemon_runs(edge)


async def test_the_message_log_keeps_a_share_of_each_chargers_bytes(
    start_edge: StartEdge,
) -> None:
    share, burst = 1024, 262_144
    edge = await start_edge(
        limits={"message_log_bytes_per_second": share, "message_log_burst_bytes": burst}
    )
    logged_bytes = (
        "SELECT coalesce(sum(length(payload)), 0) FROM ocpp_messages WHERE charger_id = ?"
    )
    async with HostileCharger(edge.url, "LOUD1") as charger:
        data = "y" * 60_000
        for number in range(20):  # ~1.2 MB of frames in a few seconds, all answered
            answer = await charger.ok("DataTransfer", {"vendorId": "x", "data": data})
            assert answer["status"], number
        session = edge.server.sessions["LOUD1"]
        assert session.frames_not_logged > 0
    await edge.server.context.store.run(lambda db: None)  # its batch holds the log rows
    kept = edge.query(logged_bytes, ("LOUD1",))[0][0]
    # The burst and what the rate refilled meanwhile, not the 1.2 MB sent.
    assert 0 < kept <= burst + 60_000 + share * 60, kept
    # Another charger's frames are still logged in full.
    async with RawCharger(edge.url, "QUIET1") as quiet:
        assert "currentTime" in await quiet.ok("Heartbeat", {})
    await edge.server.context.store.run(lambda db: None)
    assert edge.query(logged_bytes, ("QUIET1",))[0][0] > 0
