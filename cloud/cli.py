"""`ocpp-cloud`: run the aggregator, look at the fleet, and set what edges should hold."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path

from contract.cli import run_parsed
from contract.operator_actions import OPERATOR_ACTIONS

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(_parser(), argv, _problems)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file (default: search path)")
    parser = argparse.ArgumentParser(prog="ocpp-cloud", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    run = commands.add_parser("run", parents=[common], help="run the aggregator")
    run.set_defaults(command=_command("run"))
    edges = commands.add_parser("edges", parents=[common], help="edges, presence and sync lag")
    edges.set_defaults(command=_command("edges"))
    edge_actions = edges.add_subparsers(title="actions (none: list the edges)")
    assign = edge_actions.add_parser(
        "assign", parents=[common], help="put an edge in a fleet, with its site's name"
    )
    assign.add_argument("edge_id", type=_edge_id)
    assign.add_argument("fleet", help="the fleet's name (or id)")
    assign.add_argument("--name", help="the site's name, as the web view shows it")
    assign.add_argument("--location", help="where the site is (an address, a place)")
    assign.set_defaults(command=_command("edges_assign"))

    fleets = commands.add_parser("fleets", parents=[common], help="fleets (organisations)")
    fleets.add_argument("action", choices=["add", "list"])
    fleets.add_argument("name", nargs="?", help="add: the new fleet's name")
    fleets.set_defaults(command=_command("fleets"))

    users = commands.add_parser("users", parents=[common], help="people who use the web view")
    users.add_argument("action", choices=["add", "list", "disable", "password", "sign-out"])
    users.add_argument(
        "email",
        nargs="?",
        help="add, disable, password (a new one; ends their sessions), sign-out (ends every "
        "session of theirs): the user's email address",
    )
    users.add_argument(
        "--role",
        choices=["viewer", "operator", "admin"],
        default="viewer",
        help="add: viewer (looks), operator (also sends commands), admin (also manages)",
    )
    users.add_argument("--fleet", help="add: the user's fleet (name or id); list: only its")
    users.add_argument(
        "--password-stdin",
        action="store_true",
        help="add, password: read the password from standard input (else it is asked for)",
    )
    users.set_defaults(command=_command("users"))
    quarantine = commands.add_parser(
        "quarantine", parents=[common], help="edges' events the cloud will never store, and why"
    )
    quarantine.add_argument("--edge", type=_edge_id, help="only this edge's")
    quarantine.add_argument("--limit", type=int, default=50, help="newest first (default 50)")
    quarantine.add_argument("--raw", action="store_true", help="show each event as received")
    quarantine.set_defaults(command=_command("quarantine"))
    key = commands.add_parser("key", parents=[common], help="the fleet's firmware public key")
    key.set_defaults(command=_command("key"))

    cards = commands.add_parser("cards", parents=[common], help="set an edge's card list")
    cards.add_argument("edge_id", type=_edge_id)
    cards.add_argument("file", type=Path, help="JSON list of cards ({id_tag, status, ...})")
    cards.set_defaults(command=_command("cards"))

    firmware = commands.add_parser("firmware", parents=[common], help="firmware images")
    firmware.add_argument("action", choices=["add", "offer", "list", "resign"])
    firmware.add_argument("target", nargs="?", help="add: the image file; offer: the edge id")
    firmware.add_argument("--name", help="the image's name (add: default the file's name)")
    firmware.add_argument("--version", help="add: the image's version")
    firmware.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=[],
        metavar="VENDOR/MODEL",
        help="add: chargers the image is for (shell patterns, e.g. 'ACME/AC22*'); repeat "
        "for several, '*/*' for any",
    )
    firmware.add_argument(
        "--force",
        action="store_true",
        help="offer: the edge may take it though older than what it holds or its chargers run",
    )
    firmware.set_defaults(command=_command("firmware"))

    command = commands.add_parser("command", parents=[common], help="an operator command")
    command.add_argument("edge_id", type=_edge_id)
    command.add_argument("charger_id")
    command.add_argument("action", help=", ".join(OPERATOR_ACTIONS))
    command.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE")
    command.add_argument("--expires-in", type=float, default=3600.0, help="seconds")
    command.set_defaults(command=_command("command"))

    enroll_code = commands.add_parser(
        "enroll-code", parents=[common], help="a one-time code for an edge to enroll with"
    )
    enroll_code.add_argument("edge_id", type=_edge_id)
    enroll_code.add_argument(
        "--valid-for", default="24h", help="how long the code may be used: 30m, 24h, 7d"
    )
    enroll_code.add_argument(
        "--replace",
        action="store_true",
        help="the edge has an identity already (enrolled, or in touch): replace it",
    )
    enroll_code.set_defaults(command=_command("enroll_code"))
    return parser


def _edge_id(text: str) -> str:
    """An edge id argument, checked like every other (argparse shows the sentence)."""
    from contract import protocol as wire

    try:
        return wire.check_edge_id(text)
    except wire.InvalidEdgeId as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _command(name: str) -> Command:
    """The command `name` of cloud/commands.py, imported when it runs: the store, the HTTP
    server and the signing keys load for a command that uses them, not for `--help`."""

    def run(arguments: argparse.Namespace) -> int:
        commands = importlib.import_module("cloud.commands")
        command: Command = getattr(commands, f"cmd_{name}")
        return command(arguments)

    return run


def _problems() -> tuple[type[Exception], ...]:
    """What a command may raise that is the operator's to fix: one line, exit status 2."""
    from cloud.store.database import StoreError
    from contract.config_files import ConfigError
    from contract.protocol import InvalidEdgeId

    return (ConfigError, StoreError, InvalidEdgeId)
