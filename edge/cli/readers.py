"""`ocpp-edge readers`: the reader devices on this machine and the configured reader each
is mapped to; with --watch, each tap printed live (edge/cli/reader_watch.py does it).

The drivers (gpiozero, nfcpy, spidev, evdev) are imported when the command runs, not when
`ocpp-edge` starts: every other command starts without them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
from typing import Any

from edge.cli.common import settings_of


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    readers = commands.add_parser(
        "readers",
        parents=[common],
        help="reader devices found and configured; --watch prints each tap live",
    )
    readers.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=0.0,
        metavar="SECONDS",
        help="open every configured reader and print taps (for SECONDS; default until Ctrl-C)",
    )
    readers.set_defaults(command=cmd_readers)


def cmd_readers(arguments: argparse.Namespace) -> int:
    from edge.cli.reader_watch import show_readers

    settings, _ = settings_of(arguments)
    # Each reader's comings and goings are printed with their reasons; the drivers' log
    # lines (nfcpy logs every attempt) would only repeat them.
    logging.disable(logging.ERROR)
    write = functools.partial(print, flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
            asyncio.run(show_readers(settings, watch_seconds=arguments.watch, write=write))
    finally:
        logging.disable(logging.NOTSET)
    return 0
