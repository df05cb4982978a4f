"""The edge's own work per charger runs in the daemon's task group without being able
to end it: a failure is logged and counted, and a charger's work is capped."""

from __future__ import annotations

import asyncio

import pytest

from edge.ocpp.charger_work import ChargerWork


async def fails() -> None:
    raise RuntimeError("the charger answered something odd")


async def test_a_failing_piece_of_work_does_not_end_the_task_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished = asyncio.Event()

    async def other_work() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    async with asyncio.TaskGroup() as tasks:
        work = ChargerWork(tasks, per_charger=4)
        tasks.create_task(other_work())
        work.start("CP1", "local list", fails())
    assert finished.is_set()
    assert work.failures == {"CP1": 1} and not work.running
    assert "local list for CP1 failed" in caplog.text


async def test_work_beyond_the_cap_is_refused() -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def waits(name: str) -> None:
        await release.wait()
        done.append(name)

    async with asyncio.TaskGroup() as tasks:
        work = ChargerWork(tasks, per_charger=2)
        for number in range(4):
            work.start("CP1", "certificate delivery", waits(f"cp1-{number}"))
        work.start("CP2", "certificate delivery", waits("cp2"))
        assert work.running == {"CP1": 2, "CP2": 1} and work.refused == {"CP1": 2}
        release.set()
    assert sorted(done) == ["cp1-0", "cp1-1", "cp2"]
