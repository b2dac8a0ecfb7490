#!/usr/bin/env bash
# Install iomt-twin with its test dependencies and run every test.
# Works on a fresh Debian 12 machine with Python 3.11 and pip, as root (or
# with the packages of scripts/install-system-deps.sh already installed);
# run from the repository root or anywhere inside it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: chromium (PDF reports, app tests), pdftoppm, nmap,
# tcpdump and iproute2 (scanning lab), Java 17 and Maven (local Neo4j).
bash scripts/install-system-deps.sh

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Compile the local Neo4j launcher before pytest starts. The first build
# downloads Neo4j's jars from Maven Central into ~/.m2, which can take
# minutes, and would otherwise count against the first Neo4j test's timeout.
bash scripts/neo4j-server.sh build

# -p no:cacheprovider keeps a read-only checkout clean.
python3 -m pytest -p no:cacheprovider --timeout=900 "$@"
