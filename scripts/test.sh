#!/usr/bin/env bash
# Install iomt-twin with its test dependencies and run every test.
# Works on a fresh Debian 12 machine with Python 3.11 and pip, as root (or
# with the packages of scripts/install-system-deps.sh already installed);
# run from the repository root or anywhere inside it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: chromium (PDF reports, app tests), pdftoppm, nmap,
# tcpdump and iproute2 (scanning lab).
bash scripts/install-system-deps.sh

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

# -p no:cacheprovider keeps a read-only checkout clean.
python3 -m pytest -p no:cacheprovider --timeout=900 "$@"
