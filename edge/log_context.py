"""What a log record concerns: the charger, transaction and reader being handled,
kept in context variables (each connection and each tap runs in its own task, which
has its own copy) and copied onto every record by `LogContextFilter` as the
attributes CHARGER_ID, TRANSACTION_ID and READER_ID. systemd's JournalHandler sends
upper-case record attributes as journal fields, so an installer can ask for one
charger's lines: `journalctl -u ocpp-edge CHARGER_ID=CP-1`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

CHARGER_ID: ContextVar[str | None] = ContextVar("CHARGER_ID", default=None)
# Journal fields are text: the transaction id is kept as the text it is sent as.
TRANSACTION_ID: ContextVar[str | None] = ContextVar("TRANSACTION_ID", default=None)
READER_ID: ContextVar[str | None] = ContextVar("READER_ID", default=None)

FIELDS = (CHARGER_ID, TRANSACTION_ID, READER_ID)


@contextmanager
def concerning(
    *,
    charger_id: str | None = None,
    transaction_id: int | None = None,
    reader_id: str | None = None,
) -> Iterator[None]:
    """Records logged inside the block concern these (those given; the others keep
    the values they had)."""
    transaction = None if transaction_id is None else str(transaction_id)
    given = ((CHARGER_ID, charger_id), (TRANSACTION_ID, transaction), (READER_ID, reader_id))
    tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []
    for variable, value in given:
        if value is not None:
            tokens.append((variable, variable.set(value)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class LogContextFilter(logging.Filter):
    """Puts the context's ids on each record that passes (a record's own `extra=`
    values win); lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        for variable in FIELDS:
            value = variable.get()
            if value is not None and not hasattr(record, variable.name):
                setattr(record, variable.name, value)
        return True
