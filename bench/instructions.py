"""CPU instructions per MeterValues: the edge beside the bare websockets echo server.

Throughput on a shared machine moves by a third between runs minutes apart, which hides
a change of a few percent. Instructions executed do not move: each server runs under
valgrind's callgrind, the load generator (bench/load.py) drives it as fast as it answers,
and the instructions the server's process ran (every thread) are counted for two loads
of different length. Their difference over the difference in answered MeterValues is the
cost of one more message, without the connections' set-up or the server's start.

    python -m bench.instructions [--chargers 20] [--seconds 15] [--edge-cmd CMD]

Needs valgrind (Debian's `valgrind` package). Under it a server runs about 50 times
slower, so the load is modest; the batches the store commits are smaller than at full
speed, which makes the edge's figure a little higher than it would be there.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.ocpp_throughput import write_edge_config
from bench.processes import BENCH, free_port, log_tail, prepare_environment, wait_listening

# Starting Python and the daemon's imports under valgrind takes tens of seconds.
START_TIMEOUT_S = 300.0


def run_load(port: int, chargers: int, seconds: float) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "load.py"), f"ws://127.0.0.1:{port}/ocpp"]
    command += [str(chargers), "--seconds", str(seconds), "--warmup", "0"]
    load = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 600)
    if load.returncode != 0:
        sys.exit(f"the load generator failed:\n{load.stderr}")
    figures: dict[str, Any] = json.loads(load.stdout)
    if figures["errors"]:
        sys.exit(f"the server answered with errors: {figures['error_samples']}")
    return figures


def instructions_since_zero(pid: int, workdir: Path) -> int:
    """Dump the counts since the last zeroing and read their total."""
    before = set(workdir.glob("callgrind.*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    (dump,) = set(workdir.glob("callgrind.*")) - before
    match = re.search(r"^summary: (\d+)", dump.read_text(errors="replace"), re.MULTILINE)
    if match is None:
        sys.exit(f"no summary in {dump}")
    dump.unlink()
    return int(match.group(1))


def measure(command: list[str], port: int, options: argparse.Namespace, workdir: Path) -> float:
    """Instructions per additional MeterValues answered by the server `command` starts."""
    out_file = workdir / "callgrind.%p"
    # Children traced: an --edge-cmd of `env PYTHONPATH=... python ...` execs Python.
    valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes"]
    valgrind.append(f"--callgrind-out-file={out_file}")
    log = workdir / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*valgrind, *command], stdout=output, stderr=subprocess.STDOUT, cwd=workdir
        )
    try:
        wait_listening(port, server, log, timeout=START_TIMEOUT_S)
        run_load(port, options.chargers, 3)  # first calls fill caches and the store
        counts = []
        for seconds in (options.seconds, 3 * options.seconds):
            subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True)
            figures = run_load(port, options.chargers, seconds)
            answered = int(figures["acknowledged"])
            counts.append((instructions_since_zero(server.pid, workdir), answered))
    finally:
        server.terminate()
        server.wait(timeout=120)
    (short_instructions, short_messages), (long_instructions, long_messages) = counts
    if long_messages <= short_messages:
        sys.exit(f"the longer load answered no more messages: {counts}\n{log_tail(log)}")
    return (long_instructions - short_instructions) / (long_messages - short_messages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chargers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0, help="the shorter load")
    parser.add_argument(
        "--edge-cmd",
        default=f"{sys.executable} -m edge run",
        help="how to start the daemon (another checkout's, to compare)",
    )
    options = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (apt install valgrind)")
    prepare_environment()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ocpp-bench-instructions-") as directory:
        workdir = Path(directory)
        port = free_port()
        echo = [sys.executable, str(BENCH / "echo_server.py"), str(port)]
        figures["echo"] = measure(echo, port, options, workdir)
        port = free_port()
        config = write_edge_config(workdir, port)
        edge = [*shlex.split(options.edge_cmd), "--config", str(config)]
        figures["edge"] = measure(edge, port, options, workdir)
    print(f"\n{'server':<7} {'instructions per MeterValues':>30}")
    for name, per_message in figures.items():
        print(f"{name:<7} {per_message:>30,.0f}")
    print(
        f"echo/edge: {figures['echo'] / figures['edge']:.2f} "
        f"({options.chargers} chargers, as fast as answered, under callgrind)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
