#!/usr/bin/env bash
# Start or stop a local Neo4j Community 5 LTS for tests and benchmarks.
#
#   scripts/neo4j-server.sh start [PORT] [STATE_DIR]   prints NEO4J_URI=bolt://127.0.0.1:PORT
#   scripts/neo4j-server.sh stop  [PORT] [STATE_DIR]
#   scripts/neo4j-server.sh build    compiles the launcher and writes its
#                                    classpath to neo4j/target/classpath.txt
#
# The server is the embedded database of neo4j/ (Maven, from Maven Central)
# with Bolt on 127.0.0.1 and authentication off. Its data, log and process id
# live in STATE_DIR (default: ${TMPDIR:-/tmp}/iomt-twin-neo4j-PORT), which
# `stop` deletes. Needs Java 17 and Maven; the first start downloads Neo4j's
# jars into ~/.m2. Users point NEO4J_URI at their own server instead.
set -euo pipefail
cd "$(dirname "$0")/.."

command="${1:-}"
port="${2:-17687}"
state="${3:-${TMPDIR:-/tmp}/iomt-twin-neo4j-$port}"
# Seconds to wait for Bolt to accept connections after the start.
START_TIMEOUT_S=300

build() {
    if [ ! -f neo4j/target/classpath.txt ] || [ neo4j/pom.xml -nt neo4j/target/classpath.txt ] \
        || [ neo4j/src/main/java/org/iomttwin/neo4j/LocalServer.java -nt neo4j/target/classpath.txt ]; then
        echo "building the local Neo4j launcher (Maven)" >&2
        (cd neo4j && mvn -q -B package dependency:build-classpath -Dmdep.outputFile=target/classpath.txt) >&2
    fi
}

case "$command" in
start)
    if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
        echo "NEO4J_URI=bolt://127.0.0.1:$port"
        exit 0
    fi
    build
    mkdir -p "$state"
    classpath="neo4j/target/classes:$(cat neo4j/target/classpath.txt)"
    nohup java -Xmx2g -cp "$classpath" org.iomttwin.neo4j.LocalServer "$state/data" "$port" 127.0.0.1 \
        >"$state/server.log" 2>&1 &
    echo $! >"$state/pid"
    for _ in $(seq 1 "$START_TIMEOUT_S"); do
        if grep -q '^ready ' "$state/server.log"; then
            echo "NEO4J_URI=bolt://127.0.0.1:$port"
            exit 0
        fi
        if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
            echo "error: Neo4j exited during start; its log is $state/server.log:" >&2
            tail -20 "$state/server.log" >&2
            exit 1
        fi
        sleep 1
    done
    echo "error: Neo4j did not accept Bolt connections within ${START_TIMEOUT_S} s; see $state/server.log" >&2
    kill "$(cat "$state/pid")" 2>/dev/null || true
    exit 1
    ;;
build)
    build
    ;;
stop)
    if [ -f "$state/pid" ]; then
        pid="$(cat "$state/pid")"
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 1 30); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$state"
    ;;
*)
    echo "usage: $0 start|stop [PORT] [STATE_DIR] | build" >&2
    exit 2
    ;;
esac
