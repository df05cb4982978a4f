"""`ocpp-edge doctor`: one screen of checks in plain words, a fix under each problem."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.doctor import CheckResult

# By edge.doctor's Status values: the checks (broker, probes) load only when the doctor runs.
MARKS = {"ok": "✓", "warning": "!", "error": "✗"}
NAME_WIDTH = 16


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check this edge's setup: config, store, readers, GPIO, ports, chargers, "
        "broker, clock, disk",
    )
    doctor.set_defaults(command=cmd_doctor)


def cmd_doctor(arguments: argparse.Namespace) -> int:
    from edge.doctor import exit_code, run_checks

    results = asyncio.run(run_checks(arguments.config))
    print(render_results(results), flush=True)
    return exit_code(results)


def render_results(results: Sequence[CheckResult]) -> str:
    """A mark, the check's name and its summary on one line; the fix and any details
    indented beneath; a closing count."""
    lines = []
    indent = " " * (NAME_WIDTH + 3)
    for result in results:
        lines.append(f"{MARKS[result.status]} {result.name.ljust(NAME_WIDTH)} {result.summary}")
        lines.extend(f"{indent}{detail}" for detail in result.details)
        if result.fix and result.status != "ok":
            lines.append(f"{indent}fix: {result.fix}")
    errors = sum(result.status == "error" for result in results)
    warnings = sum(result.status == "warning" for result in results)
    if errors or warnings:
        lines.append(f"{_count(errors, 'problem')}, {_count(warnings, 'warning')}")
    else:
        lines.append("all good")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
