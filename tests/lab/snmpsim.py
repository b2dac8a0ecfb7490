"""Run snmpsim's command responder on 127.0.0.1 ports, serving a folder of walks.

The community string (v1/v2c) or the v3 context name selects the data file:
``core1.snmprec`` is served to community ``core1``. One responder process
listens on every port given; all ports serve the same folder.

Example
-------
>>> with Snmpsim(data_dir, 2) as agents:                    # doctest: +SKIP
...     host, port = agents.endpoints[0]
...     # walk community "core1" at host:port

The context manager starts the responder, waits until every port answers a
GET, and on exit (also when the block raises) stops the process it started,
by process id: SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

__all__ = [
    "COMMAND",
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "SnmpsimError",
    "Snmpsim",
    "free_udp_ports",
    "snmpsim_unavailable",
]

log = logging.getLogger(__name__)

COMMAND = "snmpsim-command-responder"
# Seconds to wait until every port answers (default 60): the responder builds
# an index of each data file first, which takes seconds for a 2 MB walk.
READY_TIMEOUT_S = 60.0
# Seconds the responder gets to exit after SIGTERM before SIGKILL (default 5).
STOP_TIMEOUT_S = 5.0
# Timeout in seconds of one readiness probe (net-snmp snmpget, no retries).
PROBE_TIMEOUT_S = 0.5


class SnmpsimError(RuntimeError):
    """The responder could not be started or did not answer in time."""


def snmpsim_unavailable() -> str | None:
    """Return why snmpsim cannot run here, or None when it can."""
    for tool in (COMMAND, "snmpget"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import pysmi  # noqa: F401  snmpsim 1.2 imports it without declaring it
    except ImportError:
        return "pysmi is not installed (snmpsim needs it)"
    return None


def free_udp_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct UDP ports that were free on ``host`` a moment ago.

    NOTE: another process can take a port between this call and the
    responder's bind; the responder then fails to start and logs the bind error.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Snmpsim:
    """snmpsim-command-responder on ``host`` (loopback only), as a context manager.

    Parameters
    ----------
    data_dir : path
        Folder of ``*.snmprec`` files; each file name (without the suffix)
        is a community and a v3 context name.
    ports : list of int or int
        Ports to listen on, or how many free ports to pick.
    host : str
        Listening address; must be a 127.0.0.0/8 address.
    v3_user, v3_auth_key, v3_auth_proto, v3_priv_key, v3_priv_proto : str, optional
        One SNMPv3 USM user (protocol names as snmpsim spells them: SHA256, AES).
    engine_id : str, optional
        SNMPv3 engine id as plain hex (``8000...``, snmpsim 1.2 rejects a ``0x`` prefix); snmpsim picks one when None.
    log_level : str
        snmpsim's log level; "error" keeps its per-request lines out of the log.
    """

    def __init__(
        self,
        data_dir: str | Path,
        ports: Sequence[int] | int = 1,
        host: str = "127.0.0.1",
        *,
        v3_user: str | None = None,
        v3_auth_key: str | None = None,
        v3_auth_proto: str = "SHA256",
        v3_priv_key: str | None = None,
        v3_priv_proto: str = "AES",
        engine_id: str | None = None,
        log_level: str = "error",
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        if not host.startswith("127."):
            raise ValueError(f"snmpsim host {host!r} is not a loopback address; use 127.0.0.1")
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise ValueError(f"snmpsim data folder {self.data_dir} not found")
        self.communities = sorted(path.stem for path in self.data_dir.glob("*.snmprec"))
        if not self.communities:
            raise ValueError(f"snmpsim data folder {self.data_dir} holds no .snmprec file")
        self.host = host
        self.ports = free_udp_ports(ports, host) if isinstance(ports, int) else list(ports)
        self.v3_user = v3_user
        self.v3_auth_key = v3_auth_key
        self.v3_auth_proto = v3_auth_proto
        self.v3_priv_key = v3_priv_key
        self.v3_priv_proto = v3_priv_proto
        self.engine_id = engine_id
        self.log_level = log_level
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every agent."""
        return [(self.host, port) for port in self.ports]

    @property
    def log_path(self) -> Path | None:
        """The responder's combined stdout and stderr, while it runs."""
        return Path(self._workdir.name) / "snmpsim.log" if self._workdir else None

    def command(self, cache_dir: Path) -> list[str]:
        """Return the responder's command line."""
        args = [COMMAND, f"--data-dir={self.data_dir}", f"--cache-dir={cache_dir}", f"--log-level={self.log_level}"]
        if self.engine_id:
            args.insert(1, f"--v3-engine-id={self.engine_id}")
        if self.v3_user:
            args.append(f"--v3-user={self.v3_user}")
            if self.v3_auth_key:
                args += [f"--v3-auth-key={self.v3_auth_key}", f"--v3-auth-proto={self.v3_auth_proto}"]
            if self.v3_priv_key:
                args += [f"--v3-priv-key={self.v3_priv_key}", f"--v3-priv-proto={self.v3_priv_proto}"]
        args += [f"--agent-udpv4-endpoint={self.host}:{port}" for port in self.ports]
        return args

    def __enter__(self) -> "Snmpsim":
        reason = snmpsim_unavailable()
        if reason:
            raise SnmpsimError(reason)
        self._workdir = tempfile.TemporaryDirectory(prefix="twin-snmpsim-")
        workdir = Path(self._workdir.name)
        environment = dict(os.environ)
        if os.geteuid() == 0:
            # snmpsim 1.2 exits when run as root unless this variable is set.
            environment["SNMPSIM_ALLOW_ROOT"] = "true"
        try:
            with open(workdir / "snmpsim.log", "wb") as log_file:
                self.process = subprocess.Popen(
                    self.command(workdir / "cache"),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    start_new_session=True,
                )
            log.info("started snmpsim pid %d on %s ports %s", self.process.pid, self.host, self.ports)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _answers(self, port: int) -> bool:
        probe = [
            "snmpget", "-v2c", "-c", self.communities[0], "-t", str(PROBE_TIMEOUT_S), "-r", "0", "-On",
            f"{self.host}:{port}", "1.3.6.1.2.1.1.3.0",
        ]
        completed = subprocess.run(probe, capture_output=True, timeout=PROBE_TIMEOUT_S + 5)
        return completed.returncode == 0 or b"Timeout" not in completed.stderr

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        pending = list(self.ports)
        while pending:
            if self.process.poll() is not None:
                raise SnmpsimError(
                    f"snmpsim exited with code {self.process.returncode} before answering on {self.host}; "
                    f"its log ends with:\n{self._log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise SnmpsimError(
                    f"snmpsim did not answer on {self.host} ports {pending[:10]} within {self.ready_timeout_s:g} s; "
                    f"its log ends with:\n{self._log_tail()}"
                )
            pending = [port for port in pending if not self._answers(port)]

    def stop(self) -> None:
        """Stop the responder this object started (SIGTERM, then SIGKILL) and remove its files."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
            log.info("stopped snmpsim pid %d", process.pid)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
