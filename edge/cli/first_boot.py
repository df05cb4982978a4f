"""`ocpp-edge first-boot`: apply `ocpp-edge.toml` from the boot partition (run by
ocpp-edge-firstboot.service at every start, before the daemon), and write what happened
to `ocpp-edge-status.txt` beside it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.config_files import ConfigError
from edge.cli.doctor import render_results

if TYPE_CHECKING:
    from edge.first_boot.run import Outcome, Places

STATUS_FILE = "ocpp-edge-status.txt"


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    first_boot = commands.add_parser(
        "first-boot",
        help="apply ocpp-edge.toml from the boot partition (at every start, as root)",
        description="Read ocpp-edge.toml on the boot partition, check all of it, apply what "
        "changed since the last start (host name, time zone, network, the daemon's "
        "settings, cards), give the device its own machine-id and SSH host keys, grow the "
        "root partition, move the secrets off the boot partition and enroll with the "
        "cloud. Writes ocpp-edge-status.txt beside the file. Exit status 0 when the "
        "daemon can start (also with problems, which the status file lists), 1 when it "
        "cannot (its config file is missing or wrong).",
    )
    first_boot.add_argument(
        "--boot-dir", type=Path, default=Path("/boot/firmware"), help="the boot partition"
    )
    first_boot.add_argument(
        "--root", type=Path, default=Path("/"), help="the system to apply it to (default /)"
    )
    first_boot.add_argument(
        "--enroll-seconds",
        type=float,
        default=None,
        help="how long to keep trying to reach the cloud (default 90)",
    )
    first_boot.set_defaults(command=cmd_first_boot)


def cmd_first_boot(arguments: argparse.Namespace) -> int:
    from edge.first_boot.run import ENROLL_SECONDS, Places, run_first_boot

    places = Places(arguments.boot_dir.resolve(), arguments.root.resolve())
    seconds = arguments.enroll_seconds if arguments.enroll_seconds is not None else ENROLL_SECONDS
    outcome = run_first_boot(places, enroll_seconds=seconds)
    daemon_problem = _daemon_cannot_start(places)
    if daemon_problem:
        outcome.problems.append(f"the daemon cannot start: {daemon_problem}")
    findings = "" if outcome.ok else _doctor_findings(places)
    text = status_text(outcome, findings, datetime.now(UTC))
    try:
        from edge.first_boot.boot_file import write_on_boot_partition

        write_on_boot_partition(places.boot_directory / STATUS_FILE, text)
    except OSError as error:
        print(f"ocpp-edge: cannot write {STATUS_FILE}: {error}", file=sys.stderr)
    print(text, end="", flush=True)
    if not outcome.ok:
        _show_failure(places)
    return 1 if daemon_problem else 0


def status_text(outcome: Outcome, findings: str, moment: datetime) -> str:
    lines = [
        f"ocpp-edge: this site's start on {moment:%Y-%m-%d %H:%M} UTC",
        f"site: {outcome.site_name or '(no name)'}",
        "result: OK"
        if outcome.ok
        else "result: PROBLEM (read below; fix ocpp-edge.toml and restart)",
        f"cloud: {outcome.enrolment}",
        "",
        "What was done:",
        *(f"  - {line}" for line in outcome.applied or ["nothing"]),
    ]
    if outcome.problems:
        lines += ["", "Problems:"]
        for problem in outcome.problems:
            first, *rest = problem.splitlines()
            lines.append(f"  - {first}")
            lines.extend(f"    {line}" for line in rest)
    if findings:
        lines += ["", "What `ocpp-edge doctor` finds:", findings]
    return "\n".join(lines) + "\n"


def _daemon_cannot_start(places: Places) -> str | None:
    from edge.settings import load_settings

    config = places.daemon_config
    if not config.is_file():
        return f"{config} is missing"
    try:
        load_settings(config)
    except ConfigError as error:
        return str(error)
    return None


def _doctor_findings(places: Places) -> str:
    from edge.doctor import run_checks

    config = places.daemon_config
    try:
        results = asyncio.run(run_checks(config if config.is_file() else None))
    except Exception as error:
        return f"  (the doctor could not run: {type(error).__name__}: {error})"
    return render_results(results)


def _show_failure(places: Places) -> None:
    from edge.first_boot.signals import show_failure
    from edge.settings import load_settings

    try:
        settings = load_settings(places.daemon_config)
    except (ConfigError, OSError):
        return
    show_failure(settings)
