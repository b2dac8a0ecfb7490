"""Shared fixtures: a local Neo4j server for the tests that need one.

The server is started once per test session by scripts/neo4j-server.sh
(Neo4j Community 5 LTS from Maven Central, Bolt on 127.0.0.1, data in a
temporary folder) and stopped at the end, also when tests fail. Set
``TWIN_TEST_NEO4J_URI`` to use a running server instead; its data is then
left in place.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "neo4j-server.sh"
# Seconds for the script to build the launcher (first run downloads Neo4j) and start.
START_LIMIT_S = 900


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def neo4j_uri():
    """Return the Bolt URI of a Neo4j server for this session, starting one when needed."""
    given = os.environ.get("TWIN_TEST_NEO4J_URI")
    if given:
        yield given
        return
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.fail("the Neo4j tests need Java 17 and Maven (apt-get install openjdk-17-jdk-headless maven)")
    port = _free_port()
    state = Path(tempfile.mkdtemp(prefix="twin-neo4j-"))
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", str(port), str(state)],
        capture_output=True, text=True, timeout=START_LIMIT_S, check=False,
    )
    try:
        if started.returncode != 0:
            pytest.fail(f"scripts/neo4j-server.sh start failed (exit {started.returncode}): {started.stderr.strip()}")
        yield f"bolt://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(port), str(state)], capture_output=True, timeout=120, check=False)
