"""Log records name the charger, transaction and reader they concern; the daemon logs
to journald only when its stderr is systemd's journal stream."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd.journal import JournalHandler

from contract.cli import BINDINGS_SWITCH, log_handler
from edge import log_context
from edge.log_context import LogContextFilter, concerning


class Records(logging.Handler):
    """Keeps what reaches it, after the handler's filters."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(LogContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("edge.test-log-context")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def fields(record: logging.LogRecord) -> dict[str, str]:
    names = ("CHARGER_ID", "TRANSACTION_ID", "READER_ID")
    return {name: getattr(record, name) for name in names if hasattr(record, name)}


def test_records_inside_a_block_carry_what_it_concerns(records: Records) -> None:
    log = logging.getLogger("edge.test-log-context")
    log.info("before")
    with concerning(charger_id="CP-1"):
        log.info("connected")
        with concerning(transaction_id=7):
            log.info("meter values")
        log.info("after the call")
    log.info("after the connection")
    assert [fields(record) for record in records.records] == [
        {},
        {"CHARGER_ID": "CP-1"},
        {"CHARGER_ID": "CP-1", "TRANSACTION_ID": "7"},
        {"CHARGER_ID": "CP-1"},
        {},
    ]


async def test_each_task_keeps_its_own_charger(records: Records) -> None:
    log = logging.getLogger("edge.test-log-context")
    both_inside = asyncio.Barrier(2)

    async def connection(charger_id: str) -> None:
        log_context.CHARGER_ID.set(charger_id)  # as the server does in a connection's task
        await both_inside.wait()
        log.info("message from %s", charger_id)

    await asyncio.gather(connection("CP-1"), connection("CP-2"))
    assert {record.getMessage(): fields(record) for record in records.records} == {
        "message from CP-1": {"CHARGER_ID": "CP-1"},
        "message from CP-2": {"CHARGER_ID": "CP-2"},
    }
    assert log_context.CHARGER_ID.get() is None  # the caller's context is untouched


def test_a_records_own_extra_wins(records: Records) -> None:
    with concerning(charger_id="CP-1", reader_id="door"):
        logging.getLogger("edge.test-log-context").info("x", extra={"CHARGER_ID": "CP-9"})
    assert fields(records.records[0]) == {"CHARGER_ID": "CP-9", "READER_ID": "door"}


def test_journal_handler_sends_the_ids_as_fields() -> None:
    sent: list[dict[str, Any]] = []

    def capture(text: str, /, **journal_fields: Any) -> None:
        sent.append({**journal_fields, "MESSAGE": text})

    handler = JournalHandler(sender_function=capture)
    handler.addFilter(LogContextFilter())
    logger = logging.getLogger("edge.test-journal-fields")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with concerning(charger_id="CP-1", transaction_id=42, reader_id="door"):
            logger.warning("tap refused")
    finally:
        logger.removeHandler(handler)
    assert sent[0]["MESSAGE"] == "tap refused"
    assert (sent[0]["CHARGER_ID"], sent[0]["TRANSACTION_ID"], sent[0]["READER_ID"]) == (
        "CP-1",
        "42",
        "door",
    )


@pytest.fixture
def stderr_file(tmp_path: Path) -> Iterator[io.TextIOWrapper]:
    with (tmp_path / "stderr").open("w") as stream:
        yield stream


def stream_marker(stream: io.TextIOWrapper) -> str:
    stat = Path(stream.name).stat()
    return f"{stat.st_dev}:{stat.st_ino}"


def test_journald_is_chosen_when_stderr_is_the_journal_stream(
    stderr_file: io.TextIOWrapper,
) -> None:
    handler = log_handler({"JOURNAL_STREAM": stream_marker(stderr_file)}, stderr_file)
    assert isinstance(handler, JournalHandler)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        # Started by systemd, but stderr was pointed elsewhere (StandardError=file:...).
        {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"},
        {"JOURNAL_STREAM": "8:123456789"},
        {"JOURNAL_STREAM": "not-a-stream"},
    ],
    ids=["no-systemd", "invocation-only", "other-stream", "garbled"],
)
def test_plain_stderr_lines_otherwise(
    stderr_file: io.TextIOWrapper, environ: dict[str, str]
) -> None:
    handler = log_handler(environ, stderr_file)
    assert type(handler) is logging.StreamHandler
    assert handler.stream is stderr_file


def test_the_switch_keeps_stderr_under_systemd(stderr_file: io.TextIOWrapper) -> None:
    environ = {"JOURNAL_STREAM": stream_marker(stderr_file), BINDINGS_SWITCH: "0"}
    assert type(log_handler(environ, stderr_file)) is logging.StreamHandler


def test_a_stream_without_a_file_is_not_the_journal() -> None:
    handler = log_handler({"JOURNAL_STREAM": "1:1"}, io.StringIO())
    assert type(handler) is logging.StreamHandler
