"""Build ocpp-edge's wheel on the Ansible controller: `build_wheel.py SOURCE OUTPUT_DIR`.

The wheel is built from a copy of the checkout without its virtualenv, caches and build
directory (setuptools would otherwise pack modules deleted since the last build), with a
fixed SOURCE_DATE_EPOCH so that the same sources give the same bytes and the role copies
the wheel to a host only when the code changed. Prints the wheel's path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.db*"
)
# 1980-01-01, the earliest time a zip file can hold.
SOURCE_DATE_EPOCH = "315532800"


def build_wheel(source: Path, output: Path) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ocpp-edge-wheel-") as scratch:
        copy = Path(scratch) / "source"
        shutil.copytree(source, copy, ignore=LEFT_OUT, symlinks=True)
        built = Path(scratch) / "wheel"
        environment = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                str(built),
                str(copy),
            ],
            check=True,
            env=environment,
            stdout=sys.stderr,
        )
        (wheel,) = built.glob("ocpp_edge-*.whl")
        for old in output.glob("ocpp_edge-*.whl"):
            old.unlink()
        return Path(shutil.copy2(wheel, output))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} SOURCE_DIR OUTPUT_DIR")
    print(build_wheel(Path(sys.argv[1]), Path(sys.argv[2])))
