"""The task group that stops: tasks that watch the stop end by themselves, the others are
cancelled after the grace period, a task started during the stop does not outlive it;
and the names a stuck task is known by in the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from contract.shutdown import StoppableTaskGroup, names


async def watches(stop: asyncio.Event, ended: list[str]) -> None:
    await stop.wait()
    ended.append("by itself")


async def ignores_the_stop(cancelled: list[str]) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append("cancelled")
        raise


async def test_the_group_lets_watchful_tasks_end_and_cancels_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    ended: list[str] = []
    cancelled: list[str] = []
    caplog.set_level(logging.INFO, logger="contract.shutdown")
    started = asyncio.get_running_loop().time()
    async with StoppableTaskGroup() as tasks:
        tasks.create_task(watches(stop, ended), name="watchful")
        tasks.create_task(ignores_the_stop(cancelled), name="deaf")
        await asyncio.sleep(0)
        stop.set()
        await tasks.stop(0.2)
        late = tasks.create_task(ignores_the_stop(cancelled), name="late")
    took = asyncio.get_running_loop().time() - started
    assert ended == ["by itself"]
    assert cancelled == ["cancelled"]  # "late" never ran: cancelled before its first step
    assert late.cancelled()
    assert 0.2 <= took < 2.0
    assert "still running 0.2 s after the stop: deaf (ignores_the_stop" in caplog.text
    assert "watchful" not in caplog.text


async def test_a_group_whose_tasks_all_end_does_not_wait_for_the_grace() -> None:
    stop = asyncio.Event()
    ended: list[str] = []
    started = asyncio.get_running_loop().time()
    async with StoppableTaskGroup() as tasks:
        tasks.create_task(watches(stop, ended))
        stop.set()
        await tasks.stop(30)
    assert ended == ["by itself"]
    assert asyncio.get_running_loop().time() - started < 5


async def test_names_say_which_task_and_where_it_waits() -> None:
    never = asyncio.Event()

    async def inner() -> None:
        await never.wait()

    async def outer() -> None:
        await inner()

    named = asyncio.create_task(outer(), name="cloud-link")
    unnamed = asyncio.create_task(outer())
    await asyncio.sleep(0)
    described = names([named, unnamed])
    named.cancel()
    unnamed.cancel()
    await asyncio.gather(named, unnamed, return_exceptions=True)
    # The innermost frame of the task's own code, not asyncio's Event.wait.
    assert "cloud-link (test_names_say_which_task_and_where_it_waits.<locals>.inner " in described
    assert "test_names_say_which_task_and_where_it_waits.<locals>.outer (" in described
    assert "test_shutdown_tasks.py:" in described
