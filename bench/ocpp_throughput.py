"""OCPP throughput of the edge beside its limit, a bare websockets echo server.

For each charger count, the same load generator (bench/load.py, its own process) drives
first the echo server, then the real edge daemon (its own process, a real SQLite file).
Prints msg/s, p50/p99 latency and the server's RSS for both, the ratio, and checks
afterwards that every acknowledged meter value is in the edge's file.

    python -m bench.ocpp_throughput [--chargers 50 500] [--seconds 10] [--rounds 3]

The edge commits every message with fsync and the echo server writes nothing, so the
ratio moves with the disk's fsync latency, which varies from minute to minute on a shared
host: each charger count is measured in `--rounds` rounds (echo, then edge), and the
verdict is taken on the median round's ratio, with the lowest and highest beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.processes import BENCH, free_port, log_tail, prepare_environment, stop, wait_listening

TARGET_RATIO = 0.40
TARGET_P99_MS = 50.0  # at 50 chargers
TARGET_RSS_MB = 120.0  # at 500 chargers


def measure(
    command: list[str], port: int, chargers: int, options: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Start the server, run the load generator against it, stop the server."""
    log = workdir / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_listening(port, server, log)
        url = f"ws://127.0.0.1:{port}/ocpp"
        script = str(BENCH / "load.py")
        load_command = [sys.executable, script, url, str(chargers), "--server-pid", str(server.pid)]
        load_command += ["--seconds", str(options.seconds), "--warmup", str(options.warmup)]
        load = subprocess.run(
            load_command,
            capture_output=True,
            text=True,
            timeout=options.seconds + options.warmup + 300,
        )
        if load.returncode != 0:
            sys.exit(f"the load generator failed:\n{load.stderr}\nserver log:\n{log_tail(log)}")
        figures: dict[str, Any] = json.loads(load.stdout)
    finally:
        stop(server)
    return figures


def stored_values(database: Path) -> tuple[int | None, str]:
    """Meter values the edge stored for the bench chargers' transactions, or why unknown."""
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT count(*) FROM meter_values WHERE transaction_id IN "
                "(SELECT id FROM transactions WHERE charger_id LIKE 'bench-%')"
            ).fetchone()
    except sqlite3.Error as error:
        return None, f"{type(error).__name__}: {error}"
    return int(row[0]), ""


def run_echo(chargers: int, options: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ocpp-bench-echo-") as directory:
        command = [sys.executable, str(BENCH / "echo_server.py"), str(port)]
        return measure(command, port, chargers, options, Path(directory))


def fsync_latency_ms(directory: Path, rounds: int = 100) -> float:
    """The median time to write 4 KiB and fsync it in `directory`: every answer of the edge
    waits for a commit, so a slow disk would bound its rate whatever its code does."""
    path = directory / "fsync-probe"
    samples = []
    with path.open("wb") as probe:
        for _ in range(rounds):
            started = time.perf_counter()
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
            samples.append((time.perf_counter() - started) * 1000)
    path.unlink()
    return statistics.median(samples)


def write_edge_config(workdir: Path, port: int) -> Path:
    """The daemon's config for load chargers on loopback, its store in `workdir`."""
    config = workdir / "config.toml"
    config.write_text(
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\npath_prefix = "/ocpp"\n'
        'heartbeat_interval = 300\nunknown_chargers = "accept"\n'
        # Every load charger comes from loopback, hundreds at once.
        "max_connections_per_address = 10000\nhandshakes_per_minute_per_address = 100000\n"
        "max_handshakes_in_progress = 10000\n"
        # The load generator does not play the local-list exchange after each boot,
        # and the API and file server would only compete for ports here.
        "push_local_list = false\n"
        # Each load charger calls as fast as it is answered, far beyond a real charger's
        # pace: the per-connection frame budget would measure itself, not the edge.
        "[ocpp.limits]\nframes_per_second = 100000\nframe_burst = 100000\n"
        "[api]\nport = 0\n[files]\nport = 0\n"
        f'[store]\npath = "{workdir / "edge.db"}"\n'
    )
    return config


def run_edge(chargers: int, options: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ocpp-bench-edge-") as directory:
        workdir = Path(directory)
        config = write_edge_config(workdir, port)
        command = [*shlex.split(options.edge_cmd), "--config", str(config)]
        if options.cards:
            import_cards(command, config, workdir, options.cards)
        figures = measure(command, port, chargers, options, workdir)
        figures["fsync_ms"] = fsync_latency_ms(workdir)
        figures["stored_values"], figures["stored_note"] = stored_values(workdir / "edge.db")
    return figures


def import_cards(command: list[str], config: Path, workdir: Path, cards: int) -> None:
    """A card table of `cards` cards, as `ocpp-edge cards import` fills it (the same
    program: the command without `run` and its options)."""
    spreadsheet = workdir / "cards.csv"
    rows = [f"BENCH{n:07d},Accepted,FLEET{n % 40},driver {n}" for n in range(cards)]
    spreadsheet.write_text("id_tag,status,parent_id_tag,label\n" + "\n".join(rows) + "\n")
    program = command[: command.index("run")]
    subprocess.run(
        [*program, "cards", "import", str(spreadsheet), "--config", str(config)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def cell(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def missed(met: bool) -> str:
    return "" if met else " MISSED"


def report(chargers: int, results: dict[str, dict[str, Any]]) -> bool:
    """Print the table for one charger count; False when a run had errors or lost values."""
    print(
        f"\n{'chargers':<9} {'server':<7} {'msg/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'RSS MB':>7} {'errors':>6}"
    )
    ok = True
    for name, figures in results.items():
        print(
            f"{chargers:<9} {name:<7} {figures['rate']:>7.0f} {cell(figures['p50_ms']):>7} "
            f"{cell(figures['p99_ms']):>7} {cell(figures['rss_mb'], 0):>7} "
            f"{figures['errors']:>6}"
        )
        if figures["errors"]:
            ok = False
            print(f"!!! {figures['errors']} ERRORS against {name}, e.g.:")
            for reason in figures["error_samples"]:
                print(f"!!!   {reason}")
    echo, edge = results.get("echo"), results.get("edge")
    if edge is None:
        return ok
    verdicts = []
    if echo is not None:
        ratio = edge["rate"] / echo["rate"] if echo["rate"] else 0.0
        verdicts.append(
            f"ratio edge/echo at {chargers}: {ratio:.2f} (target >= {TARGET_RATIO:.2f})"
            + missed(ratio >= TARGET_RATIO)
        )
    if chargers <= 50:
        p99 = edge["p99_ms"]
        verdicts.append(
            f"p99 {cell(p99)} ms (target < {TARGET_P99_MS:.0f} ms)"
            + missed(p99 is not None and p99 < TARGET_P99_MS)
        )
    elif echo is not None:
        verdicts.append(f"p99 {cell(edge['p99_ms'])} ms (echo {cell(echo['p99_ms'])} ms)")
    if chargers >= 500:
        rss = edge["rss_mb"]
        verdicts.append(
            f"RSS {cell(rss, 0)} MB (target < {TARGET_RSS_MB:.0f} MB)"
            + missed(rss is not None and rss < TARGET_RSS_MB)
        )
    print("   ".join(verdicts))
    fsync_ms = edge.get("fsync_ms")
    if fsync_ms:
        print(f"disk: fsync of 4 KiB p50 {fsync_ms:.2f} ms in the edge's directory")
    # Each acknowledged MeterValues carries two sampled values, all to be stored.
    expected, stored = edge["acknowledged"] * 2, edge["stored_values"]
    if stored is None:
        print(f"stored meter values: n/a ({edge['stored_note']}); expected {expected}")
    elif stored < expected:
        ok = False
        print(
            f"FAIL: {stored} meter values stored, {expected} acknowledged "
            f"({edge['acknowledged']} MeterValues x 2): {expected - stored} lost"
        )
    else:
        print(f"stored meter values: {stored} for {expected} acknowledged (2 per MeterValues)")
    return ok


def round_ratio(results: dict[str, dict[str, Any]]) -> float:
    echo, edge = results.get("echo"), results.get("edge")
    if echo is None or edge is None or not echo["rate"]:
        return 0.0
    return float(edge["rate"] / echo["rate"])


def median_round(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The round whose ratio is the median (the lower middle for an even count)."""
    ordered = sorted(rounds, key=round_ratio)
    return ordered[(len(ordered) - 1) // 2]


def print_spread(chargers: int, rounds: list[dict[str, dict[str, Any]]]) -> None:
    ratios = sorted(round_ratio(results) for results in rounds)
    edge_p99 = [results["edge"]["p99_ms"] for results in rounds if "edge" in results]
    fsyncs = [results["edge"].get("fsync_ms") for results in rounds if "edge" in results]
    print(
        f"{len(rounds)} rounds at {chargers}: ratios "
        + ", ".join(f"{ratio:.2f}" for ratio in ratios)
        + " (median round above); edge p99 ms "
        + ", ".join(cell(p99) for p99 in edge_p99)
        + "; fsync p50 ms "
        + ", ".join(cell(fsync) for fsync in fsyncs)
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description="OCPP throughput of the edge beside a bare websockets echo server."
    )
    parser.add_argument("--chargers", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="excluded from the figures")
    parser.add_argument(
        "--edge-cmd",
        default=f"{shlex.quote(sys.executable)} -m edge run",
        help="command that runs the edge in the foreground (--config FILE is appended); "
        "it must exec the server, whose PID gives the RSS",
    )
    parser.add_argument("--only", choices=["echo", "edge"], help="measure one server")
    parser.add_argument(
        "--cards", type=int, default=0, help="cards in the edge's card table (RSS with a site's)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per charger count (median ratio)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args()

    prepare_environment()
    runners = {"echo": run_echo, "edge": run_edge}
    all_ok, rows = True, []
    for chargers in options.chargers:
        rounds = []
        for _ in range(max(1, options.rounds)):
            results = {
                name: runner(chargers, options)
                for name, runner in runners.items()
                if options.only in (None, name)
            }
            rounds.append(results)
            rows.append({"chargers": chargers, **results})
        all_ok &= report(chargers, median_round(rounds))
        if len(rounds) > 1:
            print_spread(chargers, rounds)
    if options.json:
        options.json.write_text(json.dumps(rows, indent=2) + "\n")
    if not all_ok:
        print("\nFAILED: see the lines marked !!! or FAIL above")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
