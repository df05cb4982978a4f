"""What both command lines (`ocpp-edge`, `ocpp-cloud`) share: running the parsed command
with problems as one line and exit status 2, and logging (to journald under systemd, else
to stderr)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

# "0" in the environment: no systemd-python even where it is installed (logs go to stderr,
# and edge/service.py sends sd_notify through its own socket code).
BINDINGS_SWITCH = "OCPP_EDGE_SYSTEMD_PYTHON"


def configure_logging(level: str, record_filter: logging.Filter | None = None) -> None:
    """Log at `level` to journald or stderr; `record_filter` sees every record first (the
    edge puts the charger, transaction and reader a record concerns on it)."""
    handler = log_handler(os.environ, sys.stderr)
    if record_filter is not None:
        handler.addFilter(record_filter)
    logging.basicConfig(level=level, handlers=[handler])
    # The ocpp library and websockets log every frame/connection at INFO; the
    # message log in the store already has every frame.
    for chatty in ("ocpp", "websockets.server", "websockets.client", "pyftpdlib"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def log_handler(environ: Mapping[str, str], stderr: TextIO) -> logging.Handler:
    """journald's own protocol when stderr is systemd's journal stream (systemd.exec(5):
    $JOURNAL_STREAM names that stream's device:inode), so that records keep their
    priority and the CHARGER_ID/TRANSACTION_ID/READER_ID fields; plain lines otherwise."""
    if _is_journal_stream(environ, stderr) and environ.get(BINDINGS_SWITCH) != "0":
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            pass
        else:
            # journald stamps the time and the level; SYSLOG_IDENTIFIER would be argv[0].
            journal: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="ocpp-edge")
            journal.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            return journal
    stream = logging.StreamHandler(stderr)
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return stream


def _is_journal_stream(environ: Mapping[str, str], stream: TextIO) -> bool:
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):  # a stream without a file (captured, closed)
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def run_parsed(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    problems: Callable[[], tuple[type[Exception], ...]],
) -> int:
    """Run the command `argv` names; a configuration or store problem (one of `problems()`)
    is one line on stderr and exit status 2, not a traceback. `problems` is called only when
    a command fails, so that the modules defining them load with the commands that raise
    them and not for `--help`."""
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "command"):
        parser.print_help()
        return 2
    try:
        return int(arguments.command(arguments))
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if not isinstance(error, problems()):
            raise
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
