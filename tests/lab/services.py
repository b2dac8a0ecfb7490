"""Tiny TCP and UDP services for lab hosts, run as scripts inside a namespace.

Each service is one process started with :func:`start_service`, which runs
this file with the Python interpreter of the tests inside the host's
namespace and returns once the service prints ``READY`` (its socket is
bound and listening). Kinds:

``http``
    Python's ``http.server`` serving an empty folder; nmap -sV names it
    ``SimpleHTTPServer``.
``ssh-banner``
    Sends an OpenSSH identification line (:data:`SSH_BANNER`) on connect,
    reads what the client sends for up to 5 s, then closes. nmap -sV names
    it ``OpenSSH``. No SSH key exchange follows.
``udp-echo``
    Sends every datagram back to its sender.
``tcp-sink``
    Accepts connections and reads and discards everything (a raw printer
    port, a pump's service); it records the number of connections in the
    file given by ``--log`` so a test can check that nothing connected.

Only the standard library is used, because the script runs as a plain
file, not as part of the test package.
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import socketserver
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["SSH_BANNER", "KINDS", "start_service", "main"]

# Identification line of OpenSSH 9.2p1 as Debian 12 sends it (RFC 4253 4.2).
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
KINDS = ("http", "ssh-banner", "udp-echo", "tcp-sink")
# Seconds a TCP handler waits for client data before closing (default 5).
CLIENT_TIMEOUT_S = 5.0
# Seconds start_service waits for READY (default 10).
READY_TIMEOUT_S = 10.0


def start_service(host, kind: str, port: int, *, log_file: str | Path | None = None):
    """Start a service of ``kind`` on ``port`` in lab ``host`` and wait until it listens.

    Parameters
    ----------
    host : tests.lab.netns.Namespace
        Lab namespace to run in; the lab kills the process at teardown.
    kind : str
        One of :data:`KINDS`.
    port : int
        TCP or UDP port to bind on every address of the host.
    log_file : path, optional
        For ``tcp-sink``: file that receives one line per accepted connection.

    Returns
    -------
    subprocess.Popen
        The service process.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown service kind {kind!r}; expected one of {', '.join(KINDS)}")
    argv = [sys.executable, os.path.abspath(__file__), kind, str(port)]
    if log_file is not None:
        argv += ["--log", str(log_file)]
    process = host.spawn(argv)
    from tests.lab.netns import LabError, _read_line_until

    if _read_line_until(process, process.stdout, "READY", READY_TIMEOUT_S) is None:
        stderr = b""
        if process.poll() is not None:
            stderr = process.stderr.read() or b""
        raise LabError(f"service {kind} on {host.name}:{port} did not start: {stderr.decode('utf-8', 'replace')[-1000:]}")
    return process


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class _BannerHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(CLIENT_TIMEOUT_S)
        try:
            self.request.sendall(SSH_BANNER)
            self.request.recv(1024)
        except OSError:
            pass


def _sink_handler(log_path: str | None):
    lock = threading.Lock()

    class _SinkHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            if log_path:
                with lock, open(log_path, "a", encoding="utf-8") as handle:
                    handle.write(f"{self.client_address[0]}:{self.client_address[1]}\n")
            self.request.settimeout(CLIENT_TIMEOUT_S)
            try:
                while self.request.recv(4096):
                    pass
            except OSError:
                pass

    return _SinkHandler


class _QuietHTTPHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - name fixed by the base class
        pass


def _serve_udp_echo(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    _ready()
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def _ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Run one service in the foreground until killed."""
    parser = argparse.ArgumentParser(description="Tiny lab services.")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("port", type=int)
    parser.add_argument("--log", default=None, help="tcp-sink: append one line per connection to this file")
    args = parser.parse_args(argv)

    if args.kind == "udp-echo":
        _serve_udp_echo(args.port)
        return
    if args.kind == "http":
        folder = tempfile.mkdtemp(prefix="twin-lab-http-")
        handler = lambda *a, **k: _QuietHTTPHandler(*a, directory=folder, **k)  # noqa: E731
        server = http.server.ThreadingHTTPServer(("0.0.0.0", args.port), handler)
    elif args.kind == "ssh-banner":
        server = _Server(("0.0.0.0", args.port), _BannerHandler)
    else:
        server = _Server(("0.0.0.0", args.port), _sink_handler(args.log))
    _ready()
    server.serve_forever()


if __name__ == "__main__":
    main()
