"""OCPP throughput of the edge beside its limit, a bare websockets echo server.

For each charger count, the same load generator (its own process) drives first the
echo server, then the real edge daemon (its own process, real SQLite file, every
value committed before its answer). Prints msg/s, p50/p99 latency and the server's
RSS for both, the ratio, and checks that every acknowledged value was stored.

    python bench/ocpp_throughput.py [--chargers 50 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TARGET_RATIO = 0.40
TARGET_P99_AT_50_MS = 50.0
TARGET_RSS_AT_500_MB = 120.0


@dataclass
class Result:
    server: str
    chargers: int
    rate: float
    p50_ms: float
    p99_ms: float
    rss_mb: float
    errors: int
    acknowledged: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    name: str, command: list[str], port: int, path: str, chargers: int, seconds: float
) -> Result:
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, server)
        load = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "load.py"),
                f"ws://127.0.0.1:{port}{path}",
                str(chargers),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
        )
        # RSS near the end of the measured window, with every charger connected.
        time.sleep(max(seconds, 1.0))
        rss = rss_mb(server.pid)
        output, _ = load.communicate(timeout=seconds + 300)
        if load.returncode != 0:
            raise SystemExit(f"load generator failed against {name}")
        figures = json.loads(output)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return Result(
        name,
        chargers,
        figures["rate"],
        figures["p50_ms"],
        figures["p99_ms"],
        rss,
        figures["errors"],
        figures["acknowledged"],
    )


def stored_meter_values(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM meter_values").fetchone()[0])


def run(chargers: int, seconds: float) -> tuple[Result, Result, bool]:
    port = free_port()
    echo = measure(
        "echo",
        [sys.executable, str(BENCH / "echo_server.py"), str(port)],
        port,
        "/ocpp",
        chargers,
        seconds,
    )
    with tempfile.TemporaryDirectory(prefix="ocpp-bench-") as directory:
        database = Path(directory) / "edge.db"
        config = Path(directory) / "config.toml"
        port = free_port()
        config.write_text(
            f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nunknown_chargers = "accept"\n'
            f'[store]\npath = "{database}"\n[log]\nlevel = "WARNING"\n'
        )
        edge = measure(
            "edge",
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            port,
            "/ocpp",
            chargers,
            seconds,
        )
        # Two sampled values per MeterValues, each stored before its answer.
        durable = stored_meter_values(database) >= edge.acknowledged * 2
    return echo, edge, durable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chargers", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    arguments = parser.parse_args()

    print(
        f"{'chargers':>8}  {'server':6}  {'msg/s':>7}  {'p50 ms':>7}  {'p99 ms':>7}  "
        f"{'RSS MB':>6}  errors"
    )
    rows, failed = [], False
    for chargers in arguments.chargers:
        echo, edge, durable = run(chargers, arguments.seconds)
        for result in (echo, edge):
            print(
                f"{chargers:>8}  {result.server:6}  {result.rate:>7.0f}  {result.p50_ms:>7.1f}  "
                f"{result.p99_ms:>7.1f}  {result.rss_mb:>6.0f}  {result.errors}"
            )
        ratio = edge.rate / echo.rate
        verdicts = [f"ratio edge/echo {ratio:.2f} (target >= {TARGET_RATIO})"]
        if chargers <= 50:
            verdicts.append(f"p99 {edge.p99_ms:.1f} ms (target < {TARGET_P99_AT_50_MS:.0f} ms)")
        else:
            verdicts.append(f"p99 {edge.p99_ms:.1f} ms beside echo's {echo.p99_ms:.1f} ms")
            verdicts.append(f"RSS {edge.rss_mb:.0f} MB (target < {TARGET_RSS_AT_500_MB:.0f} MB)")
        verdicts.append("every acknowledged value stored" if durable else "FAIL: values lost")
        print(f"{'':>8}  " + "; ".join(verdicts))
        failed |= not durable or edge.errors > 0 or echo.errors > 0
        rows.append(
            {
                "chargers": chargers,
                "ratio": ratio,
                "durable": durable,
                "echo": echo.__dict__,
                "edge": edge.__dict__,
            }
        )
    if arguments.json:
        arguments.json.write_text(json.dumps(rows, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
