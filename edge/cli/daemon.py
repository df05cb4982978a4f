"""`ocpp-edge run` (the daemon, a demo site without configuration) and `simulate`."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from pathlib import Path
from typing import Any

from edge.cli.common import configure_logging, settings_of
from edge.settings import Settings

DEMO_CHARGERS = 3


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", parents=[common], help="run the edge daemon")
    run.set_defaults(command=cmd_run)

    simulate = commands.add_parser("simulate", help="run simulated chargers against an edge")
    simulate.add_argument("--chargers", type=int, default=1)
    simulate.add_argument("--url", default="ws://127.0.0.1:9000/ocpp")
    simulate.add_argument("--prefix", default="sim-", help="charger ids are PREFIX1..PREFIXN")
    simulate.add_argument("--connectors", type=int, default=2)
    simulate.add_argument("--meter-interval", type=float, default=10.0)
    simulate.add_argument("--seconds", type=float, help="stop after this long (default: never)")
    simulate.set_defaults(command=cmd_simulate)


def cmd_run(arguments: argparse.Namespace) -> int:
    from contract.shutdown import run_daemon
    from edge.app import run_edge
    from edge.service import ServiceNotifier
    from edge.store.writer import GIL_SWITCH_INTERVAL_S

    # One socket per charger: lift the open-files limit as far as the system allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The store's commit thread gets the GIL back within this, not CPython's 5 ms.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    settings, path = settings_of(arguments)
    configure_logging(settings.log.level)
    if path is None and not settings.demo.chargers:
        settings.demo.chargers = DEMO_CHARGERS
        settings.ocpp.unknown_chargers = "accept"
    if settings.demo.chargers:
        _print_demo_banner(settings, path)
    return run_daemon(
        lambda stop: run_edge(settings, stop=stop),
        stop_timeout=settings.service.stop_timeout,
        # STOPPING=1 at once, even while the event loop is busy.
        on_signal=ServiceNotifier().stopping,
    )


def _print_demo_banner(settings: Settings, path: Path | None) -> None:
    origin = f"config {path}" if path else "no config file found"
    config_flag = f" --config {path}" if path else ""
    port, prefix = settings.ocpp.port, settings.ocpp.path_prefix
    print(
        f"ocpp-edge demo site ({origin}): {settings.demo.chargers} simulated chargers "
        "charge cars inside the daemon.\n"
        f"  chargers connect to  ws://{settings.ocpp.host}:{port}{prefix}/<charger_id>\n"
        f"  everything is stored in  {settings.store.path.resolve()}\n"
        f"  look around (another terminal, same directory):\n"
        f"    ocpp-edge chargers{config_flag}\n"
        f"    ocpp-edge transactions{config_flag}\n"
        f"    ocpp-edge log --charger demo-1{config_flag}\n"
        f"  tap a card at demo-{settings.demo.chargers}'s reader (again to stop):\n"
        f"    ocpp-edge tap demo-reader DE00{settings.demo.chargers:02d}01{config_flag}\n"
        f"  connect your own: ocpp-edge simulate --url ws://127.0.0.1:{port}{prefix}\n"
        "  stop with Ctrl-C",
        flush=True,
    )


def cmd_simulate(arguments: argparse.Namespace) -> int:
    from edge.simulator import SimulatedChargerConfig, run_simulated_charger

    configure_logging("INFO")
    config = SimulatedChargerConfig(
        connectors=arguments.connectors, meter_interval=arguments.meter_interval
    )

    async def simulate() -> None:
        stop = asyncio.Event()
        if arguments.seconds:
            asyncio.get_running_loop().call_later(arguments.seconds, stop.set)
        async with asyncio.TaskGroup() as tasks:
            for number in range(1, arguments.chargers + 1):
                charger_id = f"{arguments.prefix}{number}"
                tasks.create_task(
                    run_simulated_charger(arguments.url, charger_id, config, stop=stop)
                )

    asyncio.run(simulate())
    return 0
