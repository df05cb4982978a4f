"""Every benchmark, one after the other, each printing its figures beside its limit:

python -m bench            # all of them
python -m bench.<name>     # one, with its own options (--help)
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "ocpp_throughput",
    "instructions",
    "boot_storm",
    "quiet_site",
    "tap_latency",
    "sync_drain",
    "sessions_page",
)


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== bench.{name} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nmissed or failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
