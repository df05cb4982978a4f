"""`ocpp-edge`: run the daemon, simulate chargers, and look at a site from its terminal."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edge.cli import cards, daemon, doctor, enroll, first_boot, readers, remote, site
from edge.cli.common import configure_logging, run_parsed

__all__ = ["configure_logging", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(_parser(), argv)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML config file (default: search path)")
    parser = argparse.ArgumentParser(prog="ocpp-edge", description=__doc__)
    # The release in use (ocpp-edge-upgrade checks a new release by it).
    parser.add_argument("--version", action="version", version=f"ocpp-edge {_installed_version()}")
    commands = parser.add_subparsers(title="commands")
    for group in (daemon, site, cards, remote, doctor, readers, enroll, first_boot):
        group.register(commands, common)
    return parser


def _installed_version() -> str:
    try:
        return version("ocpp-edge")
    except PackageNotFoundError:
        return "unknown (not installed)"
