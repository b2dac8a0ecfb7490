#!/usr/bin/env bash
# Install the Debian packages that the product and its tests need:
#   chromium       renders report.html to report.pdf (headless --print-to-pdf)
#   poppler-utils  pdftoppm, used by the PDF test to rasterise page 1
#   nmap           active scans (`twin discover scan`)
#   tcpdump        captures in the network-namespace lab tests
#   iproute2       `ip netns`, veth and bridge for the lab tests
#   lldpd, snmpd, snmp
#                  LLDP and SNMP agents of the SNMP crawl lab; snmpbulkwalk for
#                  its benchmark
#   softflowd, nfdump
#                  NetFlow/IPFIX exporter and the reference collector of the
#                  flow lab and benchmarks
#   tshark         independent record counts of the flow captures
#   openjdk-17-jdk-headless, maven
#                  build and run the local Neo4j Community 5 LTS of neo4j/
#                  (scripts/neo4j-server.sh) for the Neo4j tests and benchmarks
# Idempotent: installed packages are skipped, and apt-get update runs only when
# something is missing. Run as root on Debian 12 (bookworm).
set -euo pipefail

PACKAGES=(chromium poppler-utils nmap tcpdump iproute2 lldpd snmpd snmp softflowd nfdump tshark
          openjdk-17-jdk-headless maven)
# Daemons whose packages start them on install; the lab runs them only inside
# its own network namespaces, never in the root namespace.
DAEMONS=(lldpd snmpd softflowd nfdump)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system packages already installed: ${PACKAGES[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing Debian packages: ${missing[*]}" >&2
    echo "run this script as root (sudo $0) or install them with:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "installing: ${missing[*]}"
# A policy-rc.d that rejects every start keeps the daemons from starting in
# the root namespace during the install. An existing one is left as it is.
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=yes
fi
apt-get update -qq
status=0
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
if [ -n "$made_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
fi
if [ "$status" -ne 0 ]; then
    echo "error: apt-get install failed with status $status" >&2
    exit "$status"
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for daemon in "${DAEMONS[@]}"; do
        systemctl disable --now "$daemon" >/dev/null 2>&1 || true
    done
fi

for package in "${missing[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        echo "error: apt-get finished but $package is still not installed" >&2
        exit 1
    fi
done
echo "installed: ${missing[*]}"
