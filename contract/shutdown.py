"""Stopping a daemon promptly, whatever it is doing (the edge's and the cloud's `run`).

`run_daemon(main)` runs `main(stop)` on a new event loop. The first SIGTERM or SIGINT
sets `stop`; the daemon ends its parts in order (edge/app.py, cloud/app.py), and each
task group gives its tasks `STOP_GRACE_SECONDS` to end by themselves before cancelling
those left (`StoppableTaskGroup`). The process then exits 0, its last log line saying
it stopped. Threads blocked in a call Python cannot interrupt (a device read, a TCP
connect, a database lock) are not waited for once `main` has returned: by then the
store is closed and nothing acknowledged is left in memory.

Two things end the process at once instead, with exit status 1 and a log line naming
the tasks and threads that had not stopped: a second signal, and the stop taking
longer than `stop_timeout` seconds (a thread watches that, so a stuck event loop is
no obstacle).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Tasks that watch the stop event end by themselves within this; the rest are cancelled.
STOP_GRACE_SECONDS = 1.5
# Once `main` has returned: what nobody stopped (tasks, async generators, worker
# threads) gets this long before the process leaves it behind.
LEFTOVER_SECONDS = 0.5
# A forced exit waits at most this long for its log line to be written.
LAST_WORDS_SECONDS = 1.0
FORCED_EXIT_STATUS = 1
# Tasks and threads named in one line, at most.
NAMED_AT_MOST = 20

Main = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class StoppableTaskGroup(asyncio.TaskGroup):
    """A TaskGroup that can be told to stop: `await tasks.stop(grace)` lets its tasks end
    by themselves for `grace` seconds, then cancels those left, and any task created
    afterwards at once. Leaving the block then waits for them as any TaskGroup does."""

    def __init__(self) -> None:
        super().__init__()
        self.running: set[asyncio.Task[Any]] = set()
        self._stopping = False

    def create_task(
        self,
        coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        task = super().create_task(coro, name=name, context=context)
        if self._stopping:
            # Started during the stop (a charger's message can start one): it would
            # outlive the stop.
            task.cancel()
            return task
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def stop(self, grace: float) -> None:
        if self.running:
            await asyncio.wait(set(self.running), timeout=grace)
        self._stopping = True
        left = [task for task in self.running if not task.done()]
        if left:
            log.info("cancelled, still running %.1f s after the stop: %s", grace, names(left))
        for task in left:
            task.cancel()


def run_daemon(
    main: Main, *, stop_timeout: float, on_signal: Callable[[], None] | None = None
) -> int:
    """Run `main(stop)` until it returns; SIGTERM and SIGINT set `stop` (and call
    `on_signal` at once, from another thread). Returns 0, raises what `main` raised, or
    ends the process itself (see the module's text)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stopping = _Stopping(loop, stop_timeout, on_signal)
    failure: BaseException | None = None
    try:
        loop.run_until_complete(loop.create_task(stopping.run(main), name="main"))
    except BaseException as error:  # raised again below, once the loop is finished
        failure = error
    loop.run_until_complete(_finish_loop(loop))
    blocked = _threads_still_working(within=LEFTOVER_SECONDS)
    if failure is None:
        stopping.say_stopped(blocked)
    if blocked:
        if failure is not None:
            log.error("stopped by an error", exc_info=failure)
        # Waiting for them would take as long as their calls: the interpreter joins
        # worker threads at exit. Everything of value is closed and flushed already.
        logging.shutdown()
        os._exit(0 if failure is None else FORCED_EXIT_STATUS)
    asyncio.set_event_loop(None)
    loop.close()
    if failure is not None:
        raise failure
    return 0


class _Stopping:
    """The signals, taken by a thread of their own (so that a stuck event loop cannot
    hold them up): the first sets `stop` and starts the clock, the next ends the
    process, and so does the clock reaching `stop_timeout`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stop_timeout: float,
        on_signal: Callable[[], None] | None,
    ) -> None:
        self.loop = loop
        self.stop_timeout = stop_timeout
        self.on_signal = on_signal
        self.signalled_at: float | None = None
        self._stop: asyncio.Event | None = None
        self._received = threading.Lock()

    async def run(self, main: Main) -> None:
        self._stop = asyncio.Event()
        # Blocked in this thread, and so in every thread started from now on: only the
        # waiting thread takes them. A thread started earlier may still catch one; the
        # Python-level handler then passes it on.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        for number in SIGNALS:
            signal.signal(number, self._caught)
        threading.Thread(target=self._wait_for_signals, name="signals", daemon=True).start()
        await main(self._stop)

    def _wait_for_signals(self) -> None:
        while True:
            self._signalled(signal.sigwait(SIGNALS))

    def _caught(self, number: int, frame: FrameType | None) -> None:
        self._signalled(number)

    def _signalled(self, number: int) -> None:
        name = signal.Signals(number).name
        with self._received:
            first = self.signalled_at is None
            if first:
                self.signalled_at = time.monotonic()
        if not first:
            self._force(f"{name} again")
        # The clock first: whatever follows may wait for a lock a stuck thread holds.
        deadline = threading.Timer(
            self.stop_timeout, self._force, args=(f"not stopped within {self.stop_timeout:g} s",)
        )
        deadline.name, deadline.daemon = "stop-deadline", True
        deadline.start()
        if self.on_signal is not None:
            self.on_signal()
        log.info(
            "%s: stopping (a second signal, or %g s without an end, ends it at once)",
            name,
            self.stop_timeout,
        )
        assert self._stop is not None
        # RuntimeError: the loop is closed, the daemon is ending anyway.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._stop.set)

    def _force(self, reason: str) -> NoReturn:
        running = describe_running(self.loop)
        _exit_now(f"{reason}: stopped without finishing; still running: {running}")

    def say_stopped(self, blocked: list[threading.Thread]) -> None:
        took = ""
        if self.signalled_at is not None:
            took = f" in {time.monotonic() - self.signalled_at:.1f} s"
        if blocked:
            log.info(
                "stopped%s, not waiting for threads blocked in a call: %s",
                took,
                _describe_threads(blocked),
            )
        else:
            log.info("stopped%s", took)


async def _finish_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what nobody stopped, close async generators, let idle worker threads go:
    each bounded, as asyncio.run() does without bounds."""
    leftover = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in leftover:
        task.cancel()
    if leftover:
        await asyncio.wait(leftover, timeout=LEFTOVER_SECONDS)
    try:
        async with asyncio.timeout(LEFTOVER_SECONDS):
            await loop.shutdown_asyncgens()
    except TimeoutError:
        log.warning("async generators still closing after %g s", LEFTOVER_SECONDS)


def _threads_still_working(within: float) -> list[threading.Thread]:
    """Threads that would keep the process from exiting (not daemons, not idle workers
    of an executor), after waiting up to `within` seconds for them to finish."""
    deadline = time.monotonic() + within
    while True:
        working = [
            thread
            for thread in threading.enumerate()
            if not thread.daemon and thread is not threading.main_thread() and not _idle(thread)
        ]
        if not working or time.monotonic() >= deadline:
            return working
        time.sleep(0.02)


def names(tasks: Iterable[asyncio.Task[Any]]) -> str:
    """'cloud-link (SyncLink._connected_session link.py:160), ...': each task's name (its
    coroutine's when it has none of its own) and where it waits."""
    described = []
    for task in sorted(tasks, key=lambda task: task.get_name()):
        coroutine = task.get_coro()
        code = getattr(coroutine, "cr_code", None)
        if code is not None and Path(code.co_filename).parent.name == "asyncio":
            continue  # a helper of another task (stop.wait(), a queue's get())
        name = task.get_name()
        if name.startswith("Task-"):
            name = getattr(coroutine, "__qualname__", name)
        frame = _innermost_frame(coroutine)
        described.append(f"{name} ({_place(frame)})" if frame is not None else name)
    return _at_most(described)


def describe_running(loop: asyncio.AbstractEventLoop) -> str:
    """The event loop's unfinished tasks, the main thread when it is not in the loop's
    wait, and the threads at work: for the line of a forced exit."""
    parts = []
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if tasks:
        parts.append(f"tasks {names(tasks)}")
    main = threading.main_thread()
    if threading.current_thread() is not main:
        frame = sys._current_frames().get(main.ident or 0)
        if frame is not None and frame.f_code.co_name != "select":
            parts.append(f"main thread in {_place(frame)}")
    threads = [
        thread
        for thread in threading.enumerate()
        if thread not in (main, threading.current_thread())
        and thread.name not in ("signals", "stop-deadline", "last-words")
        and not _idle(thread)
    ]
    if threads:
        parts.append(f"threads {_describe_threads(threads)}")
    return "; ".join(parts) or "nothing"


def _describe_threads(threads: Iterable[threading.Thread]) -> str:
    frames = sys._current_frames()
    described = []
    for thread in threads:
        frame = frames.get(thread.ident or 0)
        described.append(f"{thread.name} ({_place(frame)})" if frame is not None else thread.name)
    return _at_most(described)


def _idle(thread: threading.Thread) -> bool:
    """An executor's worker waiting for work (its innermost frame is the worker loop)."""
    frame = sys._current_frames().get(thread.ident or 0)
    return (
        frame is not None
        and frame.f_code.co_name == "_worker"
        and frame.f_code.co_filename.endswith(os.path.join("concurrent", "futures", "thread.py"))
    )


def _innermost_frame(coroutine: Any) -> FrameType | None:
    """The frame of the innermost coroutine `coroutine` awaits (through `await`s and
    `yield from`s) outside asyncio itself: where the task's own code waits."""
    frame = None
    while coroutine is not None:
        inner = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if inner is None:
            break
        if Path(inner.f_code.co_filename).parent.name != "asyncio":
            frame = inner
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    return frame


def _place(frame: FrameType) -> str:
    return f"{frame.f_code.co_qualname} {Path(frame.f_code.co_filename).name}:{frame.f_lineno}"


def _at_most(described: list[str]) -> str:
    if len(described) > NAMED_AT_MOST:
        return ", ".join(described[:NAMED_AT_MOST]) + f" and {len(described) - NAMED_AT_MOST} more"
    return ", ".join(described)


def _exit_now(line: str) -> NoReturn:
    """Log `line` (from a thread of its own, so that a logging lock held by a stuck
    thread delays the exit by LAST_WORDS_SECONDS at most) and end the process."""

    def last_words() -> None:
        log.error("%s", line)
        for handler in logging.getLogger().handlers:
            handler.flush()

    writer = threading.Thread(target=last_words, name="last-words", daemon=True)
    writer.start()
    writer.join(LAST_WORDS_SECONDS)
    os._exit(FORCED_EXIT_STATUS)
