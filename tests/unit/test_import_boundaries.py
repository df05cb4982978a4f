"""The two deployables stay apart where it shows: importing the cloud loads no edge module and
no device driver, the contract loads neither side, and the command lines start without
loading what their commands do not use. Each check runs in a fresh interpreter, so that
what this test process already imported does not count."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import contract
from edge.store.database import open_database

DRIVERS = frozenset({"gpiozero", "nfc", "evdev", "spidev", "serial", "smbus2"})
# The cloud's own: none of it belongs on a Pi's command line.
CLOUD_LIBRARIES = frozenset({"cloud", "sqlalchemy", "alembic", "psycopg"})
# The daemon's network stack: a command that reads the store needs none of it.
DAEMON_LIBRARIES = frozenset(
    {"ocpp", "websockets", "fastapi", "uvicorn", "starlette", "aiomqtt", "paho", "httpx"}
)
# The start-up target; `ocpp-cloud --help` meets it many times over even on a busy machine
# (docs/performance.md has the figures).
IMPORT_SECONDS = 0.5
RUNS = 5


def loaded_packages(code: str) -> set[str]:
    """The top-level packages loaded in a fresh interpreter after running `code`."""
    program = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}


def import_seconds(*programs: list[str]) -> list[float]:
    """For each program (interpreter arguments), the seconds a fresh interpreter spends
    importing while running it: the sum of `-X importtime`'s cumulative times of the
    modules imported at the top level. The least of a few runs, taken in turns, so that
    a busy machine weighs on each program alike and counts less."""
    timings: list[list[float]] = [[] for _ in programs]
    for _ in range(RUNS):
        for arguments, runs in zip(programs, timings, strict=True):
            runs.append(_import_seconds_once(arguments))
    return [min(runs) for runs in timings]


def _import_seconds_once(arguments: list[str]) -> float:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *arguments], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    microseconds = 0
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if len(name) - len(name.lstrip()) == 1:  # a top-level import, not a nested one
            microseconds += int(cumulative)
    return microseconds / 1e6


def test_the_cloud_loads_no_edge_module_and_no_device_driver() -> None:
    loaded = loaded_packages("import cloud.cli, cloud.api, cloud.aggregator, cloud.commands")
    assert "edge" not in loaded
    assert not loaded & DRIVERS


def test_the_contract_loads_neither_side() -> None:
    modules = [
        module.name for module in pkgutil.walk_packages(contract.__path__, prefix="contract.")
    ]
    assert "contract.protocol" in modules and "contract.http.serving" in modules
    loaded = loaded_packages("\n".join(f"import {name}" for name in modules))
    assert not loaded & {"edge", "cloud"}
    assert not loaded & DRIVERS


def test_the_edge_command_line_loads_no_driver_and_nothing_of_the_cloud() -> None:
    loaded = loaded_packages("import edge.cli")
    assert not loaded & DRIVERS
    assert not loaded & CLOUD_LIBRARIES


def test_ocpp_cloud_help_imports_in_under_half_a_second() -> None:
    [seconds] = import_seconds(["-m", "cloud", "--help"])
    assert seconds < IMPORT_SECONDS


def test_ocpp_edge_chargers_loads_only_its_settings_and_store(tmp_path: Path) -> None:
    store = tmp_path / "edge.db"
    open_database(store).close()
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\npath = "{store}"\n')
    command = (
        f"from edge.cli import main\nassert main(['chargers', '--config', {str(config)!r}]) == 0"
    )
    loaded = loaded_packages(command)
    assert not loaded & DRIVERS
    assert not loaded & CLOUD_LIBRARIES
    assert not loaded & DAEMON_LIBRARIES
    # What it cannot do without is the settings loader and the store's library: on an idle
    # machine the whole is well under half a second, on a busy one both grow alike (the
    # bound is generous; docs/performance.md has the figures).
    seconds, floor = import_seconds(
        ["-m", "edge", "chargers", "--config", str(config)],
        ["-c", "import pydantic_settings, sqlite_utils"],
    )
    assert seconds < max(IMPORT_SECONDS, 2 * floor), (seconds, floor)
