#!/usr/bin/env bash
# Regenerate constraints.txt: the exact version of every Python distribution the project
# installs (the daemon's, the aggregator's and the tests' and tools'), resolved once
# together in a fresh virtualenv from pyproject.toml's ranges.
#   scripts/pin-dependencies.sh            write constraints.txt
#   scripts/pin-dependencies.sh --check    fail when a fresh resolution differs from it
# Run it with the Python the devices run (3.11, Debian bookworm): a marker such as
# python_version < "3.12" decides which backports belong to the set.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[ "${1:-}" = "--check" ] && check=1
python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

"$python" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --upgrade pip
# A non-editable install, so that the set is what a wheel of the project pulls in; the
# freeze takes pip and setuptools too (--all): sqlite-utils and colorzero require them.
"$scratch/venv/bin/python" -m pip install -q '.[dev]'
{
    echo "# The exact versions of the Python distributions ocpp-edge installs, for pip -c:"
    echo "#   pip install -c constraints.txt '.[dev]'    (scripts/setup.sh, CI)"
    echo "#   ocpp-edge-upgrade install WHEEL --constraints constraints.txt    (a device)"
    echo "# A constraint only limits what is installed: the tools' pins put nothing on a"
    echo "# device. Resolved together from pyproject.toml's ranges with Python" \
        "$("$scratch/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')."
    echo "# Regenerate with scripts/pin-dependencies.sh (docs/installing.md, \"Pinned versions\")."
    "$scratch/venv/bin/python" -m pip freeze --all --exclude ocpp-edge | LC_ALL=C sort -f
} > "$scratch/constraints.txt"

if [ "$check" -eq 1 ]; then
    diff -u constraints.txt "$scratch/constraints.txt" \
        || { echo "constraints.txt differs from a fresh resolution (diff above)" >&2; exit 1; }
    echo "constraints.txt is what a fresh resolution gives"
else
    cp "$scratch/constraints.txt" constraints.txt
    echo "wrote constraints.txt: $(grep -c '==' constraints.txt) distributions"
fi
