"""The collector's count of datagrams the kernel dropped at a full socket buffer."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from twin.discovery.collector import _socket_drops

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/udp (Linux)")

SENT = 200
PAYLOAD = bytes(1000)


def drain(sock: socket.socket) -> int:
    sock.setblocking(False)
    received = 0
    for _ in range(SENT):
        try:
            sock.recv(2048)
        except BlockingIOError:
            break
        received += 1
    return received


def test_socket_drops_counts_full_buffer():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        # The kernel raises a tiny request to its minimum, a few datagrams at most.
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        receiver.bind(("127.0.0.1", 0))
        inode = os.fstat(receiver.fileno()).st_ino
        assert _socket_drops({inode}) == 0

        for _ in range(SENT):
            sender.sendto(PAYLOAD, receiver.getsockname())
        received = drain(receiver)

        assert received < SENT
        assert _socket_drops({inode}) == SENT - received


def test_socket_drops_unknown_inode():
    assert _socket_drops({0}) is None
